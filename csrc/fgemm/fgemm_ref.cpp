// onebit/csrc/fgemm/fgemm_ref.cpp — the portable twin of the float block product.
#include "fgemm/fgemm.h"

namespace onebit {

void fgemm_block_ref(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin, int n_end) {
  if (n_end < 0) n_end = W.Np;
  for (int r = 0; r < rows; ++r) {
    float* c = acc + static_cast<int64_t>(r) * W.Np;
    for (int n = n_begin; n < n_end; ++n) c[n] = 0.0f;
    const float* a = A + static_cast<int64_t>(r) * W.K;
    for (int k = 0; k < W.K; ++k) {
      const float* b = W.packed.data() + static_cast<int64_t>(k) * W.Np;
      const float av = a[k];
      for (int n = n_begin; n < n_end; ++n) c[n] = c[n] + av * b[n];
    }
  }
}

}  // namespace onebit
