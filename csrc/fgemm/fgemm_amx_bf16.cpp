// onebit/csrc/fgemm/fgemm_amx_bf16.cpp — AMX-BF16 block of the bf16x3 float conv (compiled with
// -mamx-tile -mamx-bf16; only called after amx_bf16_usable(), between amx_tiles_begin/end).
// A 32 x 32 output block is four 16x16 float tiles (tmm0-3). Per 32 values of K: the hi halves
// of A (tmm4-5, 16 rows x 32 bf16) against the hi and then the lo halves of B (tmm6-7, 16 pairs
// of K x 16 columns in the VNNI layout), then the lo halves of A against the hi halves of B:
// twelve TDPBF16PS (bf16 x bf16 products, float accumulation).
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

}  // namespace onebit
