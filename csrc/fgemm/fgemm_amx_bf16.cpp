// onebit/csrc/fgemm/fgemm_amx_bf16.cpp — AMX-BF16 block of the bf16x3 float conv (compiled with
// -mamx-tile -mamx-bf16; only called after amx_bf16_usable(), between amx_tiles_begin/end).
// A 32 x 32 output block is four 16x16 float tiles (tmm0-3). Per 32 values of K: the hi halves
// of A (tmm4-5, 16 rows x 32 bf16) against the hi and then the lo halves of B (tmm6-7, 16 pairs
// of K x 16 columns in the VNNI layout), then the lo halves of A against the hi halves of B:
// twelve TDPBF16PS (bf16 x bf16 products, float accumulation). Also compiled with -mavx512bw:
// the patch gather of the AMX path (masked 64-byte moves; every AMX CPU has AVX-512BW).
#include <immintrin.h>

#include "fgemm/fgemm.h"

namespace onebit {

namespace {

// the 2 x 2 block of products: acc tiles 0-3 += A tiles 4-5 x B tiles 6-7
inline void dp_2x2() {
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

}  // namespace

void fgemm_bf16x3_block_amx(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, float* acc) {
  const int64_t lda = static_cast<int64_t>(W.Kb) * 2;  // bytes per A row
  const int64_t ldb = static_cast<int64_t>(W.Np) * 4;  // bytes per B row (Np columns x 2 bf16)
  const int64_t ldc = static_cast<int64_t>(W.Np) * 4;  // bytes per accumulator row
  const int64_t a16 = static_cast<int64_t>(16) * W.Kb; // elements to row 16
  for (int n0 = 0; n0 < W.Np; n0 += 32) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k0 = 0; k0 < W.Kb; k0 += 32) {
      const int64_t boff = static_cast<int64_t>(k0 / 2) * W.Np * 2 + n0 * 2;
      const uint16_t* bh = W.hi.data() + boff;
      const uint16_t* bl = W.lo.data() + boff;
      _tile_loadd(4, Ah + k0, lda);
      _tile_loadd(5, Ah + a16 + k0, lda);
      _tile_loadd(6, bh, ldb);
      _tile_loadd(7, bh + 32, ldb);
      dp_2x2();
      if (!Al) continue;  // plain bf16: hi x hi alone
      _tile_loadd(6, bl, ldb);
      _tile_loadd(7, bl + 32, ldb);
      dp_2x2();
      _tile_loadd(4, Al + k0, lda);
      _tile_loadd(5, Al + a16 + k0, lda);
      _tile_loadd(6, bh, ldb);
      _tile_loadd(7, bh + 32, ldb);
      dp_2x2();
    }
    float* c = acc + n0;
    _tile_stored(0, c, ldc);
    _tile_stored(1, c + 16, ldc);
    _tile_stored(2, c + 16 * W.Np, ldc);
    _tile_stored(3, c + 16 * W.Np + 16, ldc);
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
