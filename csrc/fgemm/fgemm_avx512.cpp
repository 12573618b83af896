// onebit/csrc/fgemm/fgemm_avx512.cpp — AVX-512F float block product (compiled with -mavx512f;
// called only after the CPU check). Micro-tile: 8 rows x 32 columns in 16 zmm accumulators;
// per k two weight vectors are loaded and each row's x[k] broadcast into two FMAs; the last
// rows % 8 rows run in a tile of exactly that many rows (wider, up to 128 columns). K is cut
// into chunks of kKC so that a 32-column weight panel (kKC x 32 floats = 32 KiB) stays in L1
// while all micro-tiles of the block pass over it; partial sums go through `acc`. The patch
// gathers of the AVX-512 path (masked moves; float, and bf16 for the AMX and AVX512_BF16 paths) live
// here too.
#include <immintrin.h>

#include "fgemm/fgemm.h"

namespace onebit {

namespace {

// R rows x P 16-float vectors of columns from n0, for k in [kc0, kc1): R*P accumulators, P weight
// vectors per k, each row's x[k] broadcast into P FMAs. kc0 > 0 continues the partial sums in acc.
template <int R, int P>
inline void tile(const float* A, int K, const float* B, int Np, float* acc, int n0, int kc0, int kc1) {
  float* o = acc + n0;
  __m512 c[R][P];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < P; ++j)
      c[i][j] = kc0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(o + static_cast<int64_t>(i) * Np + 16 * j);
  const float* b = B + static_cast<int64_t>(kc0) * Np + n0;
  for (int k = kc0; k < kc1; ++k, b += Np) {
    __m512 bv[P];
    for (int j = 0; j < P; ++j) bv[j] = _mm512_loadu_ps(b + 16 * j);
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(A[static_cast<int64_t>(i) * K + k]);
      for (int j = 0; j < P; ++j) c[i][j] = _mm512_fmadd_ps(av, bv[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < P; ++j) _mm512_storeu_ps(o + static_cast<int64_t>(i) * Np + 16 * j, c[i][j]);
}

// the columns [n_begin, n_end) (multiples of 32) of R rows: tiles of 16*P columns while they fit,
// then 32-column tiles
template <int R, int P>
inline void row_strip(const float* A, int K, const float* B, int Np, float* acc, int n_begin, int n_end, int kc0,
                      int kc1) {
  int n0 = n_begin;
  for (; n0 + 16 * P <= n_end; n0 += 16 * P) tile<R, P>(A, K, B, Np, acc, n0, kc0, kc1);
  for (; n0 < n_end; n0 += 32) tile<R, 2>(A, K, B, Np, acc, n0, kc0, kc1);
}

}  // namespace

void fgemm_block_avx512(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin, int n_end) {
  constexpr int kKC = 256;
  const int K = W.K, Np = W.Np;
  if (n_end < 0) n_end = Np;
  const float* B = W.packed.data();
  const int full = rows / 8 * 8;
  for (int kc0 = 0; kc0 < K; kc0 += kKC) {
    const int kc1 = kc0 + kKC < K ? kc0 + kKC : K;
    for (int n0 = n_begin; n0 < n_end; n0 += 32)
      for (int r0 = 0; r0 < full; r0 += 8)
        tile<8, 2>(A + static_cast<int64_t>(r0) * K, K, B, Np, acc + static_cast<int64_t>(r0) * Np, n0, kc0, kc1);
    // the last rows % 8 rows (a dense layer at batch 1, a map of 49 pixels): no zero rows are
    // multiplied; wider tiles keep at least 8 independent accumulators in flight
    const float* a = A + static_cast<int64_t>(full) * K;
    float* o = acc + static_cast<int64_t>(full) * Np;
    switch (rows - full) {
      case 1: row_strip<1, 8>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 2: row_strip<2, 4>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 3: row_strip<3, 4>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 4: row_strip<4, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 5: row_strip<5, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 6: row_strip<6, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 7: row_strip<7, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      default: break;
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

void gather_patches_bf16_avx512(const PatchGather& g) {
  // one patch row (kw*C bf16) in 32-value masked moves: no call, no branch on the length
  const int64_t full = g.row_elems / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((1ULL << (g.row_elems - full)) - 1);
  int64_t n = g.n, oy = g.oy, ox = g.ox;
  for (int r = 0; r < g.block_rows; ++r) {
    uint16_t* dh = g.ah + static_cast<int64_t>(r) * g.ld;
    uint16_t* dl = g.al ? g.al + static_cast<int64_t>(r) * g.ld : nullptr;
    if (r >= g.rows) {
      const __m512i z = _mm512_setzero_si512();
      for (int k = 0; k < g.ld; k += 32) {  // ld is a multiple of 32
        _mm512_storeu_si512(dh + k, z);
        if (dl) _mm512_storeu_si512(dl + k, z);
      }
      continue;
    }
    const int64_t at = ((n * g.HP + oy * g.sh) * g.WP + ox * g.sw) * static_cast<int64_t>(g.C);
    for (int ky = 0; ky < g.kh; ++ky) {
      const uint16_t* sh = g.xh + at + static_cast<int64_t>(ky) * g.WP * g.C;
      const uint16_t* sl = g.xl + at + static_cast<int64_t>(ky) * g.WP * g.C;
      uint16_t* th = dh + ky * g.row_elems;
      for (int64_t i = 0; i < full; i += 32) _mm512_storeu_si512(th + i, _mm512_loadu_si512(sh + i));
      if (tail) _mm512_mask_storeu_epi16(th + full, tail, _mm512_maskz_loadu_epi16(tail, sh + full));
      if (!dl) continue;
      uint16_t* tl = dl + ky * g.row_elems;
      for (int64_t i = 0; i < full; i += 32) _mm512_storeu_si512(tl + i, _mm512_loadu_si512(sl + i));
      if (tail) _mm512_mask_storeu_epi16(tl + full, tail, _mm512_maskz_loadu_epi16(tail, sl + full));
    }
    if (++ox == g.OW) {
      ox = 0;
      if (++oy == g.OH) oy = 0, ++n;
    }
  }
}

}  // namespace onebit
