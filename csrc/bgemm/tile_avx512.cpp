// onebit/csrc/bgemm/tile_avx512.cpp
// AVX-512 VPOPCNTDQ path of the XNOR-popcount tile (equations in tile.h).
//
// Register blocking: P output pixels (P <= 6) x V vectors of 8 output channels (V <= 4),
// i.e. up to 24 zmm accumulators of 64-bit lane popcount sums. Per input word t:
//   wv[v]     = Wt[blk][t][8v .. 8v+7]                (V aligned loads, shared by the P pixels)
//   acc[p][v] += vpopcntq( wv[v] XOR broadcast(X_p[t]) )  (vpxorq + vpopcntq + vpaddq)
// The loops run over kernel rows i and the kw*KWin contiguous words of that row, so no
// im2col buffer exists. The 64-bit lanes are narrowed pairwise with vpermt2d into 16 int32,
// acc = base - 2*pc, and the INT/FLOAT/BITS epilogue is applied with masked stores.
#include <immintrin.h>

#include <cstring>

#include "bgemm/tile.h"

namespace onebit {
namespace {

struct Pix {
  const uint64_t* x;     // input word of kernel tap (0,0) of this output pixel
  const int32_t* base;   // base[class][blk*32]
  int64_t q;             // raster index of the output pixel
};

static inline __mmask16 mask16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : (n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1));
}

template <int P, int V>
__attribute__((always_inline)) inline void tile(const TileJob& J, int blk, const uint64_t* wblk,
                                                const Pix* px, int nvalid) {
  __m512i acc[P][V];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_si512();

  const uint64_t* xp[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) xp[p] = px[p].x;
  const int T = J.kw * J.kwin;
  const int64_t rs = J.x_row_stride;
  const uint64_t* wp = wblk;
  for (int i = 0; i < J.kh; ++i) {
    for (int t = 0; t < T; ++t) {
      __m512i wv[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) wv[v] = _mm512_load_si512(wp + t * kBlock + 8 * v);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const __m512i b = _mm512_set1_epi64(static_cast<long long>(xp[p][t]));
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v)
          acc[p][v] = _mm512_add_epi64(acc[p][v], _mm512_popcnt_epi64(_mm512_xor_si512(wv[v], b)));
      }
    }
    wp += T * kBlock;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) xp[p] += rs;
  }

  // ---- epilogue ----
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  constexpr int H = (V + 1) / 2;  // halves of 16 channels
  const int co0 = blk * kBlock;
  const __mmask16 valid0 = mask16(nvalid), valid1 = mask16(nvalid - 16);
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    __m512i r[H];
    if constexpr (V >= 2) {
      r[0] = _mm512_permutex2var_epi32(acc[p][0], even, acc[p][1]);
    } else {
      r[0] = _mm512_zextsi256_si512(_mm512_cvtepi64_epi32(acc[p][0]));
    }
    if constexpr (V == 4) {
      r[1] = _mm512_permutex2var_epi32(acc[p][2], even, acc[p][3]);
    } else if constexpr (V == 3) {
      r[1] = _mm512_zextsi256_si512(_mm512_cvtepi64_epi32(acc[p][2]));
    }
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h)
      r[h] = _mm512_sub_epi32(_mm512_loadu_si512(px[p].base + 16 * h), _mm512_slli_epi32(r[h], 1));

    const int64_t q = px[p].q;
    if (J.mode == kModeInt) {
      int32_t* o = static_cast<int32_t*>(J.out) + q * J.cout + co0;
      _mm512_mask_storeu_epi32(o, valid0, r[0]);
      if constexpr (H == 2) _mm512_mask_storeu_epi32(o + 16, valid1, r[1]);
    } else if (J.mode == kModeFloat) {
      float* o = static_cast<float*>(J.out) + q * J.cout + co0;
      const float* res = J.residual ? J.residual + q * J.cout + co0 : nullptr;
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h) {
        const __mmask16 vm = h ? valid1 : valid0;
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(r[h]), _mm512_loadu_ps(J.mult + co0 + 16 * h));
        y = _mm512_add_ps(y, _mm512_loadu_ps(J.bias + co0 + 16 * h));
        if (res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(vm, res + 16 * h));
        _mm512_mask_storeu_ps(o + 16 * h, vm, y);
      }
    } else {
      // +1 <=> (flip ? -acc : acc) >= thresh_s; bit = !(+1), only on valid channels.
      const __mmask16 fl0 = static_cast<__mmask16>(J.flip[blk]);
      const __m512i a0 = _mm512_mask_sub_epi32(r[0], fl0, _mm512_setzero_si512(), r[0]);
      uint32_t bits = _mm512_mask_cmplt_epi32_mask(valid0, a0, _mm512_loadu_si512(J.thresh_s + co0));
      if constexpr (H == 2) {
        const __mmask16 fl1 = static_cast<__mmask16>(J.flip[blk] >> 16);
        const __m512i a1 = _mm512_mask_sub_epi32(r[1], fl1, _mm512_setzero_si512(), r[1]);
        bits |= static_cast<uint32_t>(_mm512_mask_cmplt_epi32_mask(
                    valid1, a1, _mm512_loadu_si512(J.thresh_s + co0 + 16)))
                << 16;
      }
      unsigned char* o = static_cast<unsigned char*>(J.out) + q * J.kwout * 8 + blk * 4;
      std::memcpy(o, &bits, 4);
      if (blk == J.nblk - 1 && (blk & 1) == 0) {
        const uint32_t z = 0;
        std::memcpy(o + 4, &z, 4);
      }
    }
  }
}

template <int V>
void run_v(const TileJob& Jin, int blk, int64_t q0, int64_t q1, int nvalid) {
  // Local copy: output stores (int32 / char) can then not alias the job's fields, so the
  // compiler keeps them in registers instead of reloading them after every store.
  const TileJob J = Jin;
  constexpr int PMAX = kTilePixelsAvx512;
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
      case 6: tile<6, V>(J, blk, wblk, px, nvalid); break;
      case 5: tile<5, V>(J, blk, wblk, px, nvalid); break;
      case 4: tile<4, V>(J, blk, wblk, px, nvalid); break;
      case 3: tile<3, V>(J, blk, wblk, px, nvalid); break;
      case 2: tile<2, V>(J, blk, wblk, px, nvalid); break;
      default: tile<1, V>(J, blk, wblk, px, nvalid); break;
    }
  }
}

}  // namespace

void tile_run_avx512(const TileJob& J, int blk, int64_t q0, int64_t q1) {
  const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
  switch ((nvalid + 7) / 8) {
    case 4: run_v<4>(J, blk, q0, q1, nvalid); break;
    case 3: run_v<3>(J, blk, q0, q1, nvalid); break;
    case 2: run_v<2>(J, blk, q0, q1, nvalid); break;
    default: run_v<1>(J, blk, q0, q1, nvalid); break;
  }
}

}  // namespace onebit
