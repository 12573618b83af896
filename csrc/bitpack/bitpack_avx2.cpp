// onebit/csrc/bitpack/bitpack_avx2.cpp
// AVX2 path of bit packing (compiled with -mavx2; called only when available).
//   pack:   vcmpps(x < 0) + vmovmskps -> 8 bits per 8 floats; scalar loop for the tail.
//   unpack: broadcast the byte, test it against (1<<lane), blend +1/-1.
#include <immintrin.h>

#include "bitpack/bitpack.h"

namespace onebit {

void pack_rows_avx2(const float* x, int64_t rows, int64_t C, uint64_t* out) {
  const int64_t KW = (C + 63) / 64;
  const int64_t full = C / 64;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    uint64_t* o = out + r * KW;
    for (int64_t k = 0; k < full; ++k) {
      const float* s = xr + k * 64;
      uint64_t w = 0;
      for (int q = 0; q < 8; ++q) {
        const __m256 v = _mm256_loadu_ps(s + 8 * q);
        w |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)))
             << (8 * q);
      }
      o[k] = w;
    }
    if (full < KW) {
      uint64_t w = 0;
      for (int64_t c = full * 64; c < C; ++c)
        w |= static_cast<uint64_t>(xr[c] < 0.0f) << (c - full * 64);
      o[full] = w;
    }
  }
}

void unpack_rows_avx2(const uint64_t* p, int64_t rows, int64_t C, float* out) {
  const int64_t KW = (C + 63) / 64;
  const __m256 pos = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-1.0f);
  const __m256i lanebits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const int64_t full8 = C / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* pr = p + r * KW;
    float* o = out + r * C;
    for (int64_t g = 0; g < full8; ++g) {
      const int byte = static_cast<int>((pr[g >> 3] >> (8 * (g & 7))) & 0xFF);
      const __m256i t = _mm256_and_si256(_mm256_set1_epi32(byte), lanebits);
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpeq_epi32(t, lanebits));
      _mm256_storeu_ps(o + 8 * g, _mm256_blendv_ps(pos, neg, m));
    }
    for (int64_t c = full8 * 8; c < C; ++c) o[c] = ((pr[c >> 6] >> (c & 63)) & 1) ? -1.0f : 1.0f;
  }
}

}  // namespace onebit
