// onebit/csrc/bconv/bmaxpool_avx2.cpp
// AVX2 path of the packed max/min pool (equation in bmaxpool.h): 4 channel words per ymm,
// scalar words for the tail.
#include <immintrin.h>

#include "bconv/bmaxpool.h"
#include "bconv/bmaxpool_window.h"

namespace onebit {

void maxpool_run_avx2(const PoolJob& J, int64_t q0, int64_t q1) {
  const int kv = J.kwin & ~3;
  for (int64_t q = q0; q < q1; ++q) {
    const PoolWin win = pool_window(J, q);
    uint64_t* o = J.out + q * J.kwin;
    for (int k = 0; k < kv; k += 4) {
      __m256i a = _mm256_set1_epi64x(-1), b = _mm256_setzero_si256();
      for (int h = win.h0; h < win.h1; ++h)
        for (int w = win.w0; w < win.w1; ++w) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
              J.x + ((win.n * J.H + h) * J.W + w) * J.kwin + k));
          a = _mm256_and_si256(a, v);
          b = _mm256_or_si256(b, v);
        }
      const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(J.min_mask + k));
      const __m256i r = _mm256_or_si256(_mm256_andnot_si256(m, a), _mm256_and_si256(m, b));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), r);
    }
    for (int k = kv; k < J.kwin; ++k) o[k] = pool_word(J, win, k);
  }
}

}  // namespace onebit
