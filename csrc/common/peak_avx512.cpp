// onebit/csrc/common/peak_avx512.cpp
// AVX-512 VPOPCNTDQ peak loop, same shape as the conv micro-kernel: 3 broadcast input words
// x 4 weight zmm = 12 independent accumulators; per accumulator and iteration
// vpxorq + vpopcntq + vpaddq on 512 bits (512 binary MACs).
#include <immintrin.h>

#include "common/peak.h"

namespace onebit {

double peak_kernel_avx512(int64_t iters, const uint64_t* x, uint64_t* sink) {
  __m512i w[4], acc[3][4];
  for (int v = 0; v < 4; ++v) w[v] = _mm512_loadu_si512(x + 8 * v);
  for (int p = 0; p < 3; ++p)
    for (int v = 0; v < 4; ++v) acc[p][v] = _mm512_setzero_si512();
  for (int64_t it = 0; it < iters; ++it) {
    const uint64_t* xi = x + 3 * (it & 15);
#pragma GCC unroll 3
    for (int p = 0; p < 3; ++p) {
      const __m512i b = _mm512_set1_epi64(static_cast<long long>(xi[p]));
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v)
        acc[p][v] = _mm512_add_epi64(acc[p][v], _mm512_popcnt_epi64(_mm512_xor_si512(w[v], b)));
    }
  }
  __m512i s = _mm512_setzero_si512();
  for (int p = 0; p < 3; ++p)
    for (int v = 0; v < 4; ++v) s = _mm512_add_epi64(s, acc[p][v]);
  *sink = static_cast<uint64_t>(_mm512_reduce_add_epi64(s));
  return static_cast<double>(iters) * 12 * 512;
}

}  // namespace onebit
