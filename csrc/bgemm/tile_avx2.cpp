// onebit/csrc/bgemm/tile_avx2.cpp
// AVX2 path of the XNOR-popcount tile (equations in tile.h). No vector popcount on AVX2,
// so popcount(w XOR x) uses the nibble lookup (Mula): per byte
//   cnt = LUT[b & 15] + LUT[b >> 4]   (two vpshufb),
// accumulated in byte lanes for at most 31 words (31*8 < 256), then folded into 64-bit
// lanes with vpsadbw (which sums each qword's 8 bytes: exactly a per-word popcount).
// Register blocking: P = 3 pixels x 2 ymm (8 output channels), looping over the four
// 8-channel sub-blocks of a 32-channel block; the scalar epilogue finishes each pixel.
#include <immintrin.h>

#include "bgemm/tile.h"
#include "bgemm/tile_epilogue_scalar.h"

namespace onebit {
namespace {

struct Pix {
  const uint64_t* x;
  const int32_t* base;
  int64_t q;
};

template <int P>
__attribute__((always_inline)) inline void tile8(const TileJob& J, const uint64_t* wsub,
                                                 const Pix* px, int32_t (*pc)[kBlock], int sb) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[P][2];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) acc[p][0] = acc[p][1] = zero;
  const uint64_t* xp[P];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) xp[p] = px[p].x;
  const int T = J.kw * J.kwin;
  const uint64_t* wp = wsub;
  for (int i = 0; i < J.kh; ++i) {
    for (int t = 0; t < T;) {
      const int tend = (T - t) > 31 ? t + 31 : T;
      __m256i a8[P][2];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) a8[p][0] = a8[p][1] = zero;
      for (; t < tend; ++t) {
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
  alignas(32) int64_t tmp[8];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc[p][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 4), acc[p][1]);
    for (int j = 0; j < 8; ++j) pc[p][sb * 8 + j] = static_cast<int32_t>(tmp[j]);
  }
}

template <int P>
inline void tile(const TileJob& J, int blk, const uint64_t* wblk, const Pix* px, int nvalid) {
  int32_t pc[P][kBlock];
  const int nsub = (nvalid + 7) / 8;
  for (int sb = 0; sb < nsub; ++sb) tile8<P>(J, wblk + 8 * sb, px, pc, sb);
  for (int p = 0; p < P; ++p) epilogue_scalar(J, blk, px[p].q, px[p].base, pc[p], nvalid);
}

}  // namespace

void tile_run_avx2(const TileJob& J, int blk, int64_t q0, int64_t q1) {
  constexpr int PMAX = kTilePixelsAvx2;
  const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
  const uint64_t* wblk = J.w + blk * J.w_blk_stride;
  const int64_t hw = static_cast<int64_t>(J.OH) * J.OW;
  int64_t n = q0 / hw;
  int oh = static_cast<int>((q0 % hw) / J.OW), ow = static_cast<int>(q0 % J.OW);
  const int64_t col_step = static_cast<int64_t>(J.sw) * J.kwin;
  Pix px[PMAX];
  for (int64_t q = q0; q < q1;) {
    const int np = (q1 - q) < PMAX ? static_cast<int>(q1 - q) : PMAX;
    for (int p = 0; p < np; ++p, ++q) {
      px[p].x = J.x + n * J.x_img_stride + static_cast<int64_t>(oh) * J.sh * J.x_row_stride +
                ow * col_step;
      px[p].base = J.base + J.row_off[oh] + J.col_off[ow] + blk * kBlock;
      px[p].q = q;
      if (++ow == J.OW) {
        ow = 0;
        if (++oh == J.OH) { oh = 0; ++n; }
      }
    }
    switch (np) {
      case 3: tile<3>(J, blk, wblk, px, nvalid); break;
      case 2: tile<2>(J, blk, wblk, px, nvalid); break;
      default: tile<1>(J, blk, wblk, px, nvalid); break;
    }
  }
}

}  // namespace onebit
