// onebit/csrc/bgemm/tile_epilogue_scalar.h
// Scalar fused epilogue for one output pixel and one 32-channel block (used by the
// portable and AVX2 tile kernels). Input: popcount sums pc[j], j < nvalid (channels
// blk*32 + j); acc = base[j] - 2*pc[j]; then the INT / FLOAT / BITS transform of tile.h.
// `static inline` on purpose: each including translation unit gets its own copy.
#pragma once
#include <cstdint>
#include <cstring>

#include "bgemm/tile.h"

namespace onebit {
namespace {

static inline void epilogue_scalar(const TileJob& J, int blk, int64_t q, const int32_t* base,
                                   const int32_t* pc, int nvalid) {
  const int co0 = blk * kBlock;
  if (J.mode == kModeInt) {
    int32_t* o = static_cast<int32_t*>(J.out) + q * J.cout + co0;
    for (int j = 0; j < nvalid; ++j) o[j] = base[j] - 2 * pc[j];
  } else if (J.mode == kModeFloat) {
    float* o = static_cast<float*>(J.out) + q * J.cout + co0;
    const float* res = J.residual ? J.residual + q * J.cout + co0 : nullptr;
    uint32_t signs = 0;
    for (int j = 0; j < nvalid; ++j) {
      const float a = static_cast<float>(base[j] - 2 * pc[j]);
      float y = a * J.mult[co0 + j];
      y = y + J.bias[co0 + j];
      if (res) y = y + res[j];
      o[j] = y;
      signs |= static_cast<uint32_t>(y < 0.0f) << j;
    }
    if (J.sign_out) store_block_bits(J.sign_out, J.kwout, J.nblk, blk, q, signs);
  } else {
    const uint32_t flip = J.flip[blk];
    uint32_t bits = 0;
    for (int j = 0; j < nvalid; ++j) {
      const int32_t a = base[j] - 2 * pc[j];
      const int32_t th = J.thresh[co0 + j];
      const bool pos = ((flip >> j) & 1) ? (a <= th) : (a >= th);
      bits |= static_cast<uint32_t>(!pos) << j;
    }
    store_block_bits(J.out, J.kwout, J.nblk, blk, q, bits);
  }
}

}  // namespace
}  // namespace onebit
