// onebit/csrc/common/peak_avx2.cpp
// AVX2 peak loop with the kernel's popcount method (vpshufb nibble lookup, byte
// accumulators folded by vpsadbw every 31 steps): 3 broadcast words x 2 weight ymm.
#include <immintrin.h>

#include "common/peak.h"

namespace onebit {

double peak_kernel_avx2(int64_t iters, const uint64_t* x, uint64_t* sink) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
  __m256i w[2], acc = zero;
  for (int v = 0; v < 2; ++v) w[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 4 * v));
  const int64_t outer = iters / 31;
  for (int64_t o = 0; o < outer; ++o) {
    __m256i a8[3][2];
    for (int p = 0; p < 3; ++p) a8[p][0] = a8[p][1] = zero;
    for (int it = 0; it < 31; ++it) {
      const uint64_t* xi = x + 3 * ((o + it) & 15);
#pragma GCC unroll 3
      for (int p = 0; p < 3; ++p) {
        const __m256i b = _mm256_set1_epi64x(static_cast<long long>(xi[p]));
#pragma GCC unroll 2
        for (int v = 0; v < 2; ++v) {
          const __m256i t = _mm256_xor_si256(w[v], b);
          const __m256i c = _mm256_add_epi8(
              _mm256_shuffle_epi8(lut, _mm256_and_si256(t, low)),
              _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(t, 4), low)));
          a8[p][v] = _mm256_add_epi8(a8[p][v], c);
        }
      }
    }
    for (int p = 0; p < 3; ++p)
      for (int v = 0; v < 2; ++v) acc = _mm256_add_epi64(acc, _mm256_sad_epu8(a8[p][v], zero));
  }
  alignas(32) uint64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), acc);
  *sink = t[0] + t[1] + t[2] + t[3];
  return static_cast<double>(outer) * 31 * 6 * 256;
}

}  // namespace onebit
