// onebit/csrc/bgemm/tile_ref.cpp
// Portable (reference) path of the XNOR-popcount tile (see tile.h for the equations):
// one pixel x one channel at a time, scalar __builtin_popcountll, scalar epilogue.
#include "bgemm/tile.h"
#include "bgemm/tile_epilogue_scalar.h"

namespace onebit {

void tile_run_portable(const TileJob& J, int blk, int64_t q0, int64_t q1) {
  const int64_t hw = static_cast<int64_t>(J.OH) * J.OW;
  const int T = J.kw * J.kwin;
  const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
  const uint64_t* wblk = J.w + blk * J.w_blk_stride;
  int32_t pc[kBlock];
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / hw;
    const int oh = static_cast<int>((q % hw) / J.OW), ow = static_cast<int>(q % J.OW);
    const uint64_t* xq = J.x + n * J.x_img_stride + static_cast<int64_t>(oh) * J.sh * J.x_row_stride +
                         static_cast<int64_t>(ow) * J.sw * J.kwin;
    for (int j = 0; j < nvalid; ++j) {
      int32_t s = 0;
      const uint64_t* wp = wblk + j;
      for (int i = 0; i < J.kh; ++i) {
        const uint64_t* xr = xq + i * J.x_row_stride;
        for (int t = 0; t < T; ++t) s += __builtin_popcountll(xr[t] ^ wp[(i * T + t) * kBlock]);
      }
      pc[j] = s;
    }
    const int32_t* base = J.base + J.row_off[oh] + J.col_off[ow] + blk * kBlock;
    epilogue_scalar(J, blk, q, base, pc, nvalid);
  }
}

}  // namespace onebit
