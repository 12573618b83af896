// onebit/csrc/bgemm/tile.h
// The XNOR-popcount micro-kernel shared by bgemm and bconv2d ("GEMM with implicit im2col").
//
// For output pixel q = n*OH*OW + r, r = oh*OW + ow, and output channel co (in a block of 32):
//
//   pc[q, co]  = sum_{i<kh} sum_{t<kw*KWin} popcount( X[n, oh*sh+i, ow*sw + t/KWin, t%KWin]
//                                                      XOR Wt[blk][i*kw*KWin + t][co%32] )
//              (X[n, oh*sh, ow*sw, 0] is at x + n*x_img_stride + pix_x[r])
//   acc[q, co] = base[class(oh,ow), co] - 2*pc[q, co]
//
// X is the (already border-padded) packed NHWC input, so for a kernel row i the kw taps of
// one pixel are kw*KWin consecutive words. base = K = kh*kw*C_in for +-1 padding; for zero
// padding base also removes the padded taps' contribution (see bconv.cpp). Then the fused
// epilogue (per output channel co):
//   mode INT  : out_i32[q, co] = acc
//   mode FLOAT: out_f32[q, co] = float(acc)*mult[co] + bias[co] (+ residual[q, co])
//               (mul then add, no FMA contraction: bit-identical to NumPy float32)
//               and, when sign_out is set, the signs of those floats too, packed as BITS mode
//               packs (bit 1 <=> y < 0, a NaN gives 0) into sign_out[q, co/64] (kwout words):
//               the input of the next binary conv of a Bi-Real block, without a pass of its own
//   mode BITS : bit(q, co) = !(flip[co] ? acc <= thresh[co] : acc >= thresh[co])
//               (bit 0 = +1), packed LSB-first into out_u64[q, co/64]; tail bits are 0.
//               The vector paths test the popcount sum directly against a per-position
//               table: bit <=> (pc XOR fmask[co]) > sth[class, co]  (derivation in bconv.cpp);
//               the portable path evaluates the definition above (an independent check).
//
// Everything in this header is plain data or `static inline` (one private copy per translation
// unit), so ISA-specific translation units (compiled with -mavx512*/-mavx2) share no inline
// code with generic ones.
#pragma once
#include <cstdint>

namespace onebit {

enum : int { kModeInt = 0, kModeFloat = 1, kModeBits = 2 };
constexpr int kBlock = 32;  // output channels per prepared weight block

struct TileJob {
  // Activations: padded packed input (N, Hp, Wp, kwin) words.
  const uint64_t* x;
  int64_t x_img_stride;  // Hp*Wp*kwin
  int64_t x_row_stride;  // Wp*kwin
  int kwin;
  int kh, kw;
  int HW;                     // OH*OW output pixels per image
  const int64_t* pix_x;       // [HW]: word offset of output pixel r's tap (0,0) in its image
  const int32_t* pix_base;    // [HW]: offset (in int32) of pixel r's base row into base
  // Prepared weights: [nblk][kh*kw*kwin][32] words, 64-byte aligned, zero for co >= cout.
  const uint64_t* w;
  int64_t w_blk_stride;  // kh*kw*kwin*32
  int cout, cout_pad, nblk;
  // Epilogue.
  int mode;
  const int32_t* base;        // [classes][cout_pad]
  const float* mult;          // [cout_pad]
  const float* bias;          // [cout_pad]
  const float* residual;      // [N*HW, cout] or nullptr
  const int32_t* thresh;      // [cout_pad], clamped to +-(2^30+1) (|acc| <= K < 2^30)
  const uint32_t* flip;       // [nblk]: bit j -> channel blk*32+j compares with <=
  const int32_t* sth;         // BITS, same layout as base: threshold on the popcount sum pc,
                              //   bit = 1 (-1) <=> flip ? ~pc > sth : pc > sth  (see bconv.cpp)
  const int32_t* fmask;       // [cout_pad]: -1 on flipped channels, 0 elsewhere
  void* out;                  // int32/float [N*HW, cout] or uint64 [N*HW, kwout]
  int kwout;
  uint64_t* sign_out = nullptr;  // FLOAT mode, optional: uint64 [N*HW, kwout] signs of the floats
};

// Writes the 32 bits of channel block blk of pixel q into a packed [.., kwout] uint64 output
// (the lower or upper half of word blk/2), zeroing the upper half of the last word when the
// last block is an even one. Plain code, safe to include in any translation unit.
static inline void store_block_bits(void* out, int kwout, int nblk, int blk, int64_t q, uint32_t bits) {
  unsigned char* o = static_cast<unsigned char*>(out) + q * kwout * 8 + blk * 4;
  __builtin_memcpy(o, &bits, 4);
  if (blk == nblk - 1 && (blk & 1) == 0) {
    const uint32_t z = 0;
    __builtin_memcpy(o + 4, &z, 4);
  }
}

// Compute output pixels r in [r0, r1) of image n (q = n*HW + r), channel blocks
// [blk0, blk1). Loop order: block outer, pixel tiles inner (one weight block stays in L1).
void tile_run_portable(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1);
#ifdef ONEBIT_HAVE_X86_KERNELS
void tile_run_avx2(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1);
void tile_run_avx512(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1);
#endif

// Preferred pixel-tile size of each path (thread boundaries are snapped to it).
constexpr int kTilePixelsPortable = 1;
constexpr int kTilePixelsAvx2 = 3;
constexpr int kTilePixelsAvx512 = 5;

}  // namespace onebit
