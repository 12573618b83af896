// onebit/csrc/fgemm/fgemm_avx512.cpp — AVX-512F float block product (compiled with -mavx512f;
// called only after the CPU check). Micro-tile: 8 rows x 32 columns in 16 zmm accumulators;
// per k two weight vectors are loaded and each row's x[k] broadcast into two FMAs.
#include <immintrin.h>

#include "fgemm/fgemm.h"

namespace onebit {

void fgemm_block_avx512(const float* A, int rows, const FloatWeights& W, float* acc) {
  const int K = W.K, Np = W.Np;
  const float* B = W.packed.data();
  for (int r0 = 0; r0 < rows; r0 += 8) {
    const float* a = A + static_cast<int64_t>(r0) * K;
    for (int n0 = 0; n0 < Np; n0 += 32) {
      __m512 c[8][2];
      for (int i = 0; i < 8; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
      const float* b = B + n0;
      for (int k = 0; k < K; ++k, b += Np) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        for (int i = 0; i < 8; ++i) {
          const __m512 av = _mm512_set1_ps(a[static_cast<int64_t>(i) * K + k]);
          c[i][0] = _mm512_fmadd_ps(av, b0, c[i][0]);
          c[i][1] = _mm512_fmadd_ps(av, b1, c[i][1]);
        }
      }
      for (int i = 0; i < 8; ++i) {
        float* o = acc + static_cast<int64_t>(r0 + i) * Np + n0;
        _mm512_storeu_ps(o, c[i][0]);
        _mm512_storeu_ps(o + 16, c[i][1]);
      }
    }
  }
}

}  // namespace onebit
