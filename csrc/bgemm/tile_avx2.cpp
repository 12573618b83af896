// onebit/csrc/bgemm/tile_avx2.cpp
// AVX2 path of the XNOR-popcount tile (equations in tile.h). No vector popcount on AVX2,
// so popcount(w XOR x) uses the nibble lookup (Mula): per byte
//   cnt = LUT[b & 15] + LUT[b >> 4]   (two vpshufb),
// accumulated in byte lanes for at most 31 words of a kernel row (31*8 < 256), then folded into 64-bit
// lanes with vpsadbw (which sums each qword's 8 bytes: exactly a per-word popcount).
// Register blocking: P = 3 pixels x 2 ymm (8 output channels), looping over the four
// 8-channel sub-blocks of a 32-channel block; the 64-bit sums are narrowed to 8 int32 and
// the INT/FLOAT epilogue (acc = base - 2*pc) or the BITS compare on the popcount sums
// (bit <=> (pc XOR fmask) > sth, see bconv.cpp) runs on 8 channels at a time.
#include <immintrin.h>

#include <cstring>

#include "bgemm/tile.h"

namespace onebit {
namespace {

static inline __m256i lane_mask8(int n) {  // first n (0..8) int32 lanes all-ones
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

// Popcount sums of P pixels x 8 channels (sub-block sb of the 32-channel block), narrowed
// to int32 lanes: pc[p] = (c0..c7).
template <int P>
__attribute__((always_inline)) inline void popcounts8(const TileJob& J, const uint64_t* wsub,
                                                      const uint64_t* const* xin, __m256i* pc) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[P][2];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) acc[p][0] = acc[p][1] = zero;
  const uint64_t* xp[P];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) xp[p] = xin[p];
  const int T = J.kw * J.kwin;
  const uint64_t* wp = wsub;
  for (int i = 0; i < J.kh; ++i) {
    // chunks of at most 31 words per kernel row (one chunk for T <= 31: any 3x3 conv up to 640
    // input channels): inside a chunk only the byte counters are live, so they stay in registers;
    // they are folded into the 64-bit sums after it (31*8 < 256: no byte overflows)
    for (int t0 = 0; t0 < T; t0 += 31) {
      const int t1 = t0 + 31 < T ? t0 + 31 : T;
      __m256i a8[P][2];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) a8[p][0] = a8[p][1] = zero;
      for (int t = t0; t < t1; ++t) {
        const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp + t * kBlock));
        const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp + t * kBlock + 4));
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) {
          const __m256i b = _mm256_set1_epi64x(static_cast<long long>(xp[p][t]));
          const __m256i x0 = _mm256_xor_si256(w0, b), x1 = _mm256_xor_si256(w1, b);
          const __m256i c0 = _mm256_add_epi8(
              _mm256_shuffle_epi8(lut, _mm256_and_si256(x0, low)),
              _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x0, 4), low)));
          const __m256i c1 = _mm256_add_epi8(
              _mm256_shuffle_epi8(lut, _mm256_and_si256(x1, low)),
              _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x1, 4), low)));
          a8[p][0] = _mm256_add_epi8(a8[p][0], c0);
          a8[p][1] = _mm256_add_epi8(a8[p][1], c1);
        }
      }
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        acc[p][0] = _mm256_add_epi64(acc[p][0], _mm256_sad_epu8(a8[p][0], zero));
        acc[p][1] = _mm256_add_epi64(acc[p][1], _mm256_sad_epu8(a8[p][1], zero));
      }
    }
    wp += T * kBlock;
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) xp[p] += J.x_row_stride;
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    const __m256i s0 = acc[p][0], s1 = acc[p][1];  // ch 0-3, ch 4-7
    // low dwords of the 8 qwords -> [s0.0 s0.1 s1.0 s1.1 | s0.2 s0.3 s1.2 s1.3] -> reorder
    const __m256i lo = _mm256_castps_si256(_mm256_shuffle_ps(
        _mm256_castsi256_ps(s0), _mm256_castsi256_ps(s1), _MM_SHUFFLE(2, 0, 2, 0)));
    pc[p] = _mm256_permute4x64_epi64(lo, _MM_SHUFFLE(3, 1, 2, 0));
  }
}

template <int P>
inline void tile(const TileJob& J, int blk, const uint64_t* ximg, int64_t n, int r, int nvalid) {
  const uint64_t* xp[P];
  for (int p = 0; p < P; ++p) xp[p] = ximg + J.pix_x[r + p];
  const uint64_t* wblk = J.w + blk * J.w_blk_stride;
  const int nsub = (nvalid + 7) / 8;
  const int co0 = blk * kBlock;
  uint32_t bits[P] = {};  // BITS mode, or the signs of FLOAT mode's outputs (sign_out)
  for (int sb = 0; sb < nsub; ++sb) {
    __m256i pc[P];
    popcounts8<P>(J, wblk + 8 * sb, xp, pc);
    const int c = co0 + 8 * sb;  // first channel of the sub-block
    const int nv = nvalid - 8 * sb < 8 ? nvalid - 8 * sb : 8;
    const __m256i vmask = lane_mask8(nv);
    for (int p = 0; p < P; ++p) {
      const int64_t q = n * J.HW + r + p;
      if (J.mode == kModeBits) {
        // bit (-1) <=> (pc XOR fmask) > sth  (see bconv.cpp)
        const __m256i x = _mm256_xor_si256(pc[p], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(J.fmask + c)));
        const __m256i th = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(J.sth + J.pix_base[r + p] + c));
        const __m256i gt = _mm256_and_si256(_mm256_cmpgt_epi32(x, th), vmask);
        bits[p] |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(gt))) << (8 * sb);
        continue;
      }
      const __m256i base = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(J.base + J.pix_base[r + p] + c));
      const __m256i acc = _mm256_sub_epi32(base, _mm256_slli_epi32(pc[p], 1));
      if (J.mode == kModeInt) {
        _mm256_maskstore_epi32(static_cast<int32_t*>(J.out) + q * J.cout + c, vmask, acc);
      } else {
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(J.mult + c));
        y = _mm256_add_ps(y, _mm256_loadu_ps(J.bias + c));
        if (J.residual) y = _mm256_add_ps(y, _mm256_maskload_ps(J.residual + q * J.cout + c, vmask));
        _mm256_maskstore_ps(static_cast<float*>(J.out) + q * J.cout + c, vmask, y);
        if (J.sign_out) {
          const __m256 neg = _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ), _mm256_castsi256_ps(vmask));
          bits[p] |= static_cast<uint32_t>(_mm256_movemask_ps(neg)) << (8 * sb);
        }
      }
    }
  }
  if (J.mode == kModeBits || (J.mode == kModeFloat && J.sign_out)) {
    void* out = J.mode == kModeBits ? J.out : static_cast<void*>(J.sign_out);
    for (int p = 0; p < P; ++p) store_block_bits(out, J.kwout, J.nblk, blk, n * J.HW + r + p, bits[p]);
  }
}

}  // namespace

void tile_run_avx2(const TileJob& Jin, int blk0, int blk1, int64_t n, int r0, int r1) {
  const TileJob J = Jin;  // local copy: stores cannot alias it
  constexpr int PMAX = kTilePixelsAvx2;
  const uint64_t* ximg = J.x + n * J.x_img_stride;
  for (int blk = blk0; blk < blk1; ++blk) {
    const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
    int r = r0;
    for (; r + PMAX <= r1; r += PMAX) tile<PMAX>(J, blk, ximg, n, r, nvalid);
    if (r1 - r == 2) tile<2>(J, blk, ximg, n, r, nvalid);
    else if (r1 - r == 1) tile<1>(J, blk, ximg, n, r, nvalid);
  }
}

}  // namespace onebit
