// onebit/csrc/igemm/igemm_ref.cpp — the portable reference twin: plain int32 dot products.
#include "igemm/igemm.h"

namespace onebit {

template <class TA>
static void block(const TA* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc) {
  for (int r = 0; r < rows; ++r) {
    const TA* a = A + r * lda;
    for (int n = 0; n < W.N; ++n) {
      const int8_t* w = &W.plain[static_cast<size_t>(n) * W.Kp];
      int32_t s = 0;
      for (int k = 0; k < W.Kp; ++k) s += static_cast<int32_t>(a[k]) * static_cast<int32_t>(w[k]);
      acc[static_cast<size_t>(r) * W.Np + n] = s;
    }
  }
}

void igemm_block_ref(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned) {
  if (a_unsigned)
    block(reinterpret_cast<const uint8_t*>(A), rows, lda, W, acc);
  else
    block(A, rows, lda, W, acc);
}

}  // namespace onebit
