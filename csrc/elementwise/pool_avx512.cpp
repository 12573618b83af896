// onebit/csrc/elementwise/pool_avx512.cpp — AVX-512 rows of pool2d_f32 (see pool.h; the portable
// twin is pool_row in pool.cpp and gives the same bits). Per output pixel the window is walked row by
// row with pointer steps, every 16 channels one zmm register (a masked one for the tail):
//   max: acc = -inf, then acc = max(v, acc) per tap (= the twin's std::max(acc, v): a NaN tap is
//        skipped, ties keep the earlier tap);
//   avg: a float64 sum over the taps in the same order, divided by their count, rounded once.
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "elementwise/pool.h"

namespace onebit {

namespace {

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1); }

// One output pixel's window: ny rows of nx taps from `w` (the window's first in-image tap), rows
// `row` floats apart, taps C floats apart; taps visited row by row, as the twin does.
void max_pixel(const float* w, int ny, int nx, int64_t row, int64_t C, float* o) {
  const __m512 lo = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t c = 0;
  for (; c + 64 <= C; c += 64) {  // four registers in flight
    __m512 a0 = lo, a1 = lo, a2 = lo, a3 = lo;
    const float* r = w + c;
    for (int iy = 0; iy < ny; ++iy, r += row) {
      const float* v = r;
      for (int ix = 0; ix < nx; ++ix, v += C) {
        a0 = _mm512_max_ps(_mm512_loadu_ps(v), a0);
        a1 = _mm512_max_ps(_mm512_loadu_ps(v + 16), a1);
        a2 = _mm512_max_ps(_mm512_loadu_ps(v + 32), a2);
        a3 = _mm512_max_ps(_mm512_loadu_ps(v + 48), a3);
      }
    }
    _mm512_storeu_ps(o + c, a0);
    _mm512_storeu_ps(o + c + 16, a1);
    _mm512_storeu_ps(o + c + 32, a2);
    _mm512_storeu_ps(o + c + 48, a3);
  }
  for (; c < C; c += 16) {
    const __mmask16 m = tail_mask(C - c);
    __m512 a = lo;
    const float* r = w + c;
    for (int iy = 0; iy < ny; ++iy, r += row)
      for (int ix = 0; ix < nx; ++ix) a = _mm512_max_ps(_mm512_maskz_loadu_ps(m, r + ix * C), a);
    _mm512_mask_storeu_ps(o + c, m, a);
  }
}

void avg_pixel(const float* w, int ny, int nx, int64_t row, int64_t C, float* o) {
  const __m512d cnt = _mm512_set1_pd(static_cast<double>(ny * nx));
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = tail_mask(C - c);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    const float* r = w + c;
    for (int iy = 0; iy < ny; ++iy, r += row)
      for (int ix = 0; ix < nx; ++ix) {
        const __m512 v = _mm512_maskz_loadu_ps(m, r + ix * C);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
      }
    const __m256 rlo = _mm512_cvtpd_ps(_mm512_div_pd(lo, cnt)), rhi = _mm512_cvtpd_ps(_mm512_div_pd(hi, cnt));
    const __m512 r8 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(rlo)),
                                                          _mm256_castps_pd(rhi), 1));
    _mm512_mask_storeu_ps(o + c, m, r8);
  }
}

}  // namespace

void pool_row_avx512(const float* x, const PoolGeom& g, bool is_max, float* out, int64_t n, int oy, int row0) {
  const int y0 = std::max(oy * g.sh - g.ph, 0), y1 = std::min(oy * g.sh - g.ph + g.kh, g.H);
  const int64_t row = static_cast<int64_t>(g.W) * g.C;
  for (int ox = 0; ox < g.OW; ++ox) {
    const int x0 = std::max(ox * g.sw - g.pw, 0), x1 = std::min(ox * g.sw - g.pw + g.kw, g.W);
    const float* w = x + ((n * g.H + y0 - row0) * g.W + x0) * g.C;
    float* o = out + ((n * g.OH + oy) * g.OW + ox) * g.C;
    if (is_max) max_pixel(w, y1 - y0, x1 - x0, row, g.C, o);
    else avg_pixel(w, y1 - y0, x1 - x0, row, g.C, o);
  }
}

}  // namespace onebit
