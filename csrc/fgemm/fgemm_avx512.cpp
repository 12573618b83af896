// onebit/csrc/fgemm/fgemm_avx512.cpp — AVX-512F float block product (compiled with -mavx512f;
// called only after the CPU check). Micro-tile: 8 rows x 32 columns in 16 zmm accumulators;
// per k two weight vectors are loaded and each row's x[k] broadcast into two FMAs; the last
// rows % 8 rows run in a tile of exactly that many rows (wider, up to 128 columns). K is cut
// into chunks of kKC so that a 32-column weight panel (kKC x 32 floats = 32 KiB) stays in L1
// while all micro-tiles of the block pass over it; partial sums go through `acc`. The patch
// gathers of the AVX-512 path (masked moves; float, and bf16 for the AMX and AVX512_BF16 paths) live
// here too.
#include <immintrin.h>

#include <type_traits>

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

namespace {

// Calls f(r, at) for the `rows` output pixels of a block, from (n, oy, ox) on: `at` is the offset of
// the pixel's first patch value in the padded NHWC input. The geometry is copied into locals first:
// both gathers store through pointers the compiler would otherwise let alias the struct's fields.
template <class G, class F>
inline void for_each_patch(const G& g, F f) {
  const int64_t HP = g.HP, WP = g.WP, sh = g.sh, sw = g.sw, C = g.C, OH = g.OH, OW = g.OW;
  const int rows = g.rows;
  int64_t n = g.n, oy = g.oy, ox = g.ox;
  for (int r = 0; r < rows; ++r) {
    f(r, ((n * HP + oy * sh) * WP + ox * sw) * C);
    if (++ox == OW) {
      ox = 0;
      if (++oy == OH) oy = 0, ++n;
    }
  }
}

// one patch: kh rows of `re` values, `src_step` apart in the input, `re` apart in the A row, each
// in 32-value moves (full chunks, then the masked tail); TAIL_ONLY: rows shorter than 32 values
// (a stem's 7×3), where the compiled loop has no chunk loop left (0.106 → 0.087 ms for the stem's gather on one core)
template <bool TAIL_ONLY>
inline void copy_patch_bf16(const uint16_t* s, uint16_t* d, int kh, int64_t src_step, int64_t re, int64_t full,
                            __mmask32 tail) {
  for (int ky = 0; ky < kh; ++ky, s += src_step, d += re) {
    if (!TAIL_ONLY)
      for (int64_t i = 0; i < full; i += 32) _mm512_storeu_si512(d + i, _mm512_loadu_si512(s + i));
    if (tail) _mm512_mask_storeu_epi16(d + full, tail, _mm512_maskz_loadu_epi16(tail, s + full));
  }
}

}  // namespace

void gather_patches_f32_avx512(const FloatPatchGather& g) {
  // one patch row (kw*C floats) in 16-float masked moves: no call, no branch on the length
  const int64_t re = g.row_elems, full = re / 16 * 16, ld = g.ld, src_step = static_cast<int64_t>(g.WP) * g.C;
  const __mmask16 tail = static_cast<__mmask16>((1u << (re - full)) - 1);
  const int kh = g.kh;
  const float* const x = g.x;
  float* const a = g.a;
  for_each_patch(g, [&](int r, int64_t at) {
    const float* s = x + at;
    float* d = a + r * ld;
    for (int ky = 0; ky < kh; ++ky, s += src_step, d += re) {
      for (int64_t i = 0; i < full; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
      if (tail) _mm512_mask_storeu_ps(d + full, tail, _mm512_maskz_loadu_ps(tail, s + full));
    }
  });
  for (int r = g.rows; r < g.block_rows; ++r) {  // rows past M are zero
    float* dst = a + r * ld;
    int64_t k = 0;
    for (; k + 16 <= ld; k += 16) _mm512_storeu_ps(dst + k, _mm512_setzero_ps());
    for (; k < ld; ++k) dst[k] = 0.0f;
  }
}

void gather_patches_bf16_avx512(const PatchGather& g) {
  // one patch row (kw*C bf16) in 32-value masked moves: no call, no branch on the length
  const int64_t re = g.row_elems, full = re / 32 * 32, ld = g.ld, src_step = static_cast<int64_t>(g.WP) * g.C;
  const __mmask32 tail = static_cast<__mmask32>((1ULL << (re - full)) - 1);
  const int kh = g.kh;
  const uint16_t* const xh = g.xh;
  const uint16_t* const xl = g.xl;
  uint16_t* const ah = g.ah;
  uint16_t* const al = g.al;
  auto gather = [&](auto tail_only) {
    for_each_patch(g, [&](int r, int64_t at) {
      copy_patch_bf16<tail_only>(xh + at, ah + r * ld, kh, src_step, re, full, tail);
      if (al) copy_patch_bf16<tail_only>(xl + at, al + r * ld, kh, src_step, re, full, tail);
    });
  };
  if (full == 0) gather(std::true_type{});
  else gather(std::false_type{});
  const __m512i z = _mm512_setzero_si512();
  for (int r = g.rows; r < g.block_rows; ++r)  // rows past M are zero (AMX loads whole 16-row tiles)
    for (int64_t k = 0; k < ld; k += 32) {  // ld is a multiple of 32
      _mm512_storeu_si512(ah + r * ld + k, z);
      if (al) _mm512_storeu_si512(al + r * ld + k, z);
    }
}

}  // namespace onebit
