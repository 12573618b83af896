// onebit/csrc/bitpack/bitpack_avx512.cpp
// AVX-512 path of bit packing (compiled with -mavx512f/bw/...; called only when available).
//   pack:   4 x vcmpps(x < 0) -> 16-bit masks -> one 64-bit word; the tail is a masked load
//           (masked-out lanes read as 0.0 -> bit 0, so tail bits are 0).
//   unpack: vblendmps(mask, +1, -1) per 16 channels, masked store for the tail.
#include <immintrin.h>

#include "bitpack/bitpack.h"

namespace onebit {

static inline __mmask16 tail_mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : (n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1));
}

void pack_rows_avx512(const float* x, int64_t rows, int64_t C, uint64_t* out) {
  const int64_t KW = (C + 63) / 64;
  const int64_t full = C / 64;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    uint64_t* o = out + r * KW;
    for (int64_t k = 0; k < full; ++k) {
      const float* s = xr + k * 64;
      const uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s), zero, _CMP_LT_OQ);
      const uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + 16), zero, _CMP_LT_OQ);
      const uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + 32), zero, _CMP_LT_OQ);
      const uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + 48), zero, _CMP_LT_OQ);
      o[k] = m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
    }
    if (full < KW) {
      const float* s = xr + full * 64;
      const int64_t n = C - full * 64;
      uint64_t w = 0;
      for (int q = 0; q < 4; ++q) {
        const __mmask16 lm = tail_mask16(n - 16 * q);
        const __m512 v = _mm512_maskz_loadu_ps(lm, s + 16 * q);
        w |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ)) << (16 * q);
      }
      o[full] = w;
    }
  }
}

void unpack_rows_avx512(const uint64_t* p, int64_t rows, int64_t C, float* out) {
  const int64_t KW = (C + 63) / 64;
  const __m512 pos = _mm512_set1_ps(1.0f), neg = _mm512_set1_ps(-1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* pr = p + r * KW;
    float* o = out + r * C;
    for (int64_t k = 0; k < KW; ++k) {
      const uint64_t w = pr[k];
      for (int q = 0; q < 4; ++q) {
        const int64_t c = k * 64 + q * 16;
        const __mmask16 lm = tail_mask16(C - c);
        if (!lm) break;
        const __m512 v = _mm512_mask_blend_ps(static_cast<__mmask16>(w >> (16 * q)), pos, neg);
        _mm512_mask_storeu_ps(o + c, lm, v);
      }
    }
  }
}

}  // namespace onebit
