// onebit/csrc/fgemm/fgemm_avx512.cpp — AVX-512F float block product (compiled with -mavx512f;
// called only after the CPU check). Micro-tile: 8 rows x 32 columns in 16 zmm accumulators;
// per k two weight vectors are loaded and each row's x[k] broadcast into two FMAs. K is cut
// into chunks of kKC so that a 32-column weight panel (kKC x 32 floats = 32 KiB) stays in L1
// while all micro-tiles of the block pass over it; partial sums go through `acc`. The patch
// gather of the AVX-512 path (masked moves) lives here too.
#include <immintrin.h>

#include "fgemm/fgemm.h"

namespace onebit {

void fgemm_block_avx512(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin, int n_end) {
  constexpr int kKC = 256;
  const int K = W.K, Np = W.Np;
  if (n_end < 0) n_end = Np;
  const float* B = W.packed.data();
  for (int kc0 = 0; kc0 < K; kc0 += kKC) {
    const int kc1 = kc0 + kKC < K ? kc0 + kKC : K;
    for (int n0 = n_begin; n0 < n_end; n0 += 32) {
      for (int r0 = 0; r0 < rows; r0 += 8) {
        const float* a = A + static_cast<int64_t>(r0) * K;
        float* o = acc + static_cast<int64_t>(r0) * Np + n0;
        __m512 c[8][2];
        for (int i = 0; i < 8; ++i) {
          if (kc0 == 0) {
            c[i][0] = c[i][1] = _mm512_setzero_ps();
          } else {
            c[i][0] = _mm512_loadu_ps(o + static_cast<int64_t>(i) * Np);
            c[i][1] = _mm512_loadu_ps(o + static_cast<int64_t>(i) * Np + 16);
          }
        }
        const float* b = B + static_cast<int64_t>(kc0) * Np + n0;
        for (int k = kc0; k < kc1; ++k, b += Np) {
          const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
          for (int i = 0; i < 8; ++i) {
            const __m512 av = _mm512_set1_ps(a[static_cast<int64_t>(i) * K + k]);
            c[i][0] = _mm512_fmadd_ps(av, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(av, b1, c[i][1]);
          }
        }
        for (int i = 0; i < 8; ++i) {
          _mm512_storeu_ps(o + static_cast<int64_t>(i) * Np, c[i][0]);
          _mm512_storeu_ps(o + static_cast<int64_t>(i) * Np + 16, c[i][1]);
        }
      }
    }
  }
}

void gather_patches_f32_avx512(const FloatPatchGather& g) {
  // one patch row (kw*C floats) in 16-float masked moves: no call, no branch on the length
  const int64_t full = g.row_elems / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (g.row_elems - full)) - 1);
  int64_t n = g.n, oy = g.oy, ox = g.ox;
  for (int r = 0; r < g.block_rows; ++r) {
    float* dst = g.a + r * g.ld;
    if (r >= g.rows) {
      int64_t k = 0;
      for (; k + 16 <= g.ld; k += 16) _mm512_storeu_ps(dst + k, _mm512_setzero_ps());
      for (; k < g.ld; ++k) dst[k] = 0.0f;
      continue;
    }
    const float* src = g.x + ((n * g.HP + oy * g.sh) * g.WP + ox * g.sw) * g.C;
    for (int ky = 0; ky < g.kh; ++ky) {
      const float* s = src + static_cast<int64_t>(ky) * g.WP * g.C;
      float* d = dst + ky * g.row_elems;
      for (int64_t i = 0; i < full; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
      if (tail) _mm512_mask_storeu_ps(d + full, tail, _mm512_maskz_loadu_ps(tail, s + full));
    }
    if (++ox == g.OW) {
      ox = 0;
      if (++oy == g.OH) oy = 0, ++n;
    }
  }
}

}  // namespace onebit
