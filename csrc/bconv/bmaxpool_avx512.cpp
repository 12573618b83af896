// onebit/csrc/bconv/bmaxpool_avx512.cpp
// AVX-512 path of the packed max/min pool (equation in bmaxpool.h): 8 channel words
// (512 channels) per zmm with masked loads/stores for the word tail; the final select
// (and & ~m) | (or & m) is one vpternlogq.
#include <immintrin.h>

#include "bconv/bmaxpool.h"
#include "bconv/bmaxpool_window.h"

namespace onebit {

void maxpool_run_avx512(const PoolJob& J, int64_t q0, int64_t q1) {
  for (int64_t q = q0; q < q1; ++q) {
    const PoolWin win = pool_window(J, q);
    uint64_t* o = J.out + q * J.kwin;
    for (int k = 0; k < J.kwin; k += 8) {
      const int n = J.kwin - k;
      const __mmask8 lm = n >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << n) - 1);
      __m512i a = _mm512_set1_epi64(-1), b = _mm512_setzero_si512();
      for (int h = win.h0; h < win.h1; ++h)
        for (int w = win.w0; w < win.w1; ++w) {
          const __m512i v =
              _mm512_maskz_loadu_epi64(lm, J.x + ((win.n * J.H + h) * J.W + w) * J.kwin + k);
          a = _mm512_and_si512(a, v);
          b = _mm512_or_si512(b, v);
        }
      const __m512i m = _mm512_maskz_loadu_epi64(lm, J.min_mask + k);
      // ternlog(A=m, B=b, C=a) = m ? b : a  -> truth table 0xCA
      const __m512i r = _mm512_ternarylogic_epi64(m, b, a, 0xCA);
      _mm512_mask_storeu_epi64(o + k, lm, r);
    }
  }
}

}  // namespace onebit
