// onebit/csrc/bgemm/tile_ref.cpp
// Portable (reference) path of the XNOR-popcount tile (see tile.h for the equations):
// one pixel x one channel at a time, scalar __builtin_popcountll, scalar epilogue.
#include "bgemm/tile.h"
#include "bgemm/tile_epilogue_scalar.h"

namespace onebit {

void tile_run_portable(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1) {
  const int T = J.kw * J.kwin;
  const uint64_t* ximg = J.x + n * J.x_img_stride;
  int32_t pc[kBlock];
  for (int blk = blk0; blk < blk1; ++blk) {
    const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
    const uint64_t* wblk = J.w + blk * J.w_blk_stride;
    for (int r = r0; r < r1; ++r) {
      const uint64_t* xq = ximg + J.pix_x[r];
      for (int j = 0; j < nvalid; ++j) {
        int32_t s = 0;
        const uint64_t* wp = wblk + j;
        for (int i = 0; i < J.kh; ++i) {
          const uint64_t* xr = xq + i * J.x_row_stride;
          for (int t = 0; t < T; ++t) s += __builtin_popcountll(xr[t] ^ wp[(i * T + t) * kBlock]);
        }
        pc[j] = s;
      }
      epilogue_scalar(J, blk, n * J.HW + r, J.base + J.pix_base[r] + blk * kBlock, pc, nvalid);
    }
  }
}

}  // namespace onebit
