// onebit/csrc/bgemm/tile_avx512.cpp
// AVX-512 VPOPCNTDQ path of the XNOR-popcount tile (equations in tile.h).
//
// Register blocking: P output pixels (P <= 5) x V vectors of 8 output channels (V <= 4),
// i.e. up to 20 zmm accumulators of 64-bit lane popcount sums (P = 6, 24 accumulators,
// measured ~10% slower: register pressure). Per input word t:
//   wv[v]     = Wt[blk][t][8v .. 8v+7]                (V aligned loads, shared by the P pixels)
//   acc[p][v] += vpopcntq( wv[v] XOR broadcast(X_p[t]) )  (vpxorq + vpopcntq + vpaddq)
// The loops run over kernel rows i and the kw*KWin contiguous words of that row, so no
// im2col buffer exists; the first word is peeled so the accumulators need no zeroing.
// The 64-bit lanes are narrowed pairwise with vpermt2d into 16 int32, acc = base - 2*pc,
// and the INT/FLOAT epilogue is applied with masked stores. BITS compares the popcount
// sums directly: bit <=> (pc XOR fmask) > sth[class] (one xor + one compare per 16 ch).
#include <immintrin.h>

#include <cstring>

#include "bgemm/tile.h"

namespace onebit {
namespace {

static inline __mmask16 mask16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : (n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1));
}

template <int P, int V, bool First>
__attribute__((always_inline)) inline void step(__m512i (&acc)[P][V], const uint64_t* wt,
                                                const uint64_t* const (&xp)[P], int t) {
  __m512i wv[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) wv[v] = _mm512_load_si512(wt + 8 * v);
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    const __m512i b = _mm512_set1_epi64(static_cast<long long>(xp[p][t]));
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const __m512i c = _mm512_popcnt_epi64(_mm512_xor_si512(wv[v], b));
      acc[p][v] = First ? c : _mm512_add_epi64(acc[p][v], c);
    }
  }
}

// One tile: pixels r..r+P-1 of image n (input at ximg), channel block blk.
template <int P, int V, int Mode>
__attribute__((always_inline)) inline void tile(const TileJob& J, int blk, const uint64_t* ximg,
                                                int64_t n, int r, int nvalid) {
  const uint64_t* xp[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) xp[p] = ximg + J.pix_x[r + p];
  const int T = J.kw * J.kwin;
  const int64_t rs = J.x_row_stride;
  const uint64_t* wp = J.w + blk * J.w_blk_stride;

  __m512i acc[P][V];
  step<P, V, true>(acc, wp, xp, 0);
  for (int t = 1; t < T; ++t) step<P, V, false>(acc, wp + t * kBlock, xp, t);
  for (int i = 1; i < J.kh; ++i) {
    wp += T * kBlock;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) xp[p] += rs;
    for (int t = 0; t < T; ++t) step<P, V, false>(acc, wp + t * kBlock, xp, t);
  }

  // ---- epilogue ----
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  constexpr int H = (V + 1) / 2;  // halves of 16 channels
  const int co0 = blk * kBlock;
  const __mmask16 valid0 = mask16(nvalid), valid1 = mask16(nvalid - 16);
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    __m512i a[H];
    if constexpr (V >= 2) {
      a[0] = _mm512_permutex2var_epi32(acc[p][0], even, acc[p][1]);
    } else {
      a[0] = _mm512_zextsi256_si512(_mm512_cvtepi64_epi32(acc[p][0]));
    }
    if constexpr (V == 4) {
      a[1] = _mm512_permutex2var_epi32(acc[p][2], even, acc[p][3]);
    } else if constexpr (V == 3) {
      a[1] = _mm512_zextsi256_si512(_mm512_cvtepi64_epi32(acc[p][2]));
    }
    const int64_t q = n * J.HW + r + p;
    if constexpr (Mode == kModeBits) {
      // bit (-1) <=> (pc XOR fmask) > sth  (fmask = -1 on flipped channels; see bconv.cpp)
      const int32_t* sth = J.sth + J.pix_base[r + p] + co0;
      const __m512i f0 = _mm512_xor_si512(a[0], _mm512_loadu_si512(J.fmask + co0));
      uint32_t bits = _mm512_mask_cmpgt_epi32_mask(valid0, f0, _mm512_loadu_si512(sth));
      if constexpr (H == 2) {
        const __m512i f1 = _mm512_xor_si512(a[1], _mm512_loadu_si512(J.fmask + co0 + 16));
        bits |= static_cast<uint32_t>(_mm512_mask_cmpgt_epi32_mask(valid1, f1, _mm512_loadu_si512(sth + 16)))
                << 16;
      }
      store_block_bits(J.out, J.kwout, J.nblk, blk, q, bits);
    } else {
      const int32_t* base = J.base + J.pix_base[r + p] + co0;
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h)
        a[h] = _mm512_sub_epi32(_mm512_loadu_si512(base + 16 * h), _mm512_slli_epi32(a[h], 1));
      if constexpr (Mode == kModeInt) {
        int32_t* o = static_cast<int32_t*>(J.out) + q * J.cout + co0;
        _mm512_mask_storeu_epi32(o, valid0, a[0]);
        if constexpr (H == 2) _mm512_mask_storeu_epi32(o + 16, valid1, a[1]);
      } else {
        float* o = static_cast<float*>(J.out) + q * J.cout + co0;
        const float* res = J.residual ? J.residual + q * J.cout + co0 : nullptr;
        uint32_t signs = 0;
#pragma GCC unroll 2
        for (int h = 0; h < H; ++h) {
          const __mmask16 vm = h ? valid1 : valid0;
          __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(a[h]), _mm512_loadu_ps(J.mult + co0 + 16 * h));
          y = _mm512_add_ps(y, _mm512_loadu_ps(J.bias + co0 + 16 * h));
          if (res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(vm, res + 16 * h));
          _mm512_mask_storeu_ps(o + 16 * h, vm, y);
          signs |= static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(vm, y, _mm512_setzero_ps(), _CMP_LT_OQ)) << (16 * h);
        }
        if (J.sign_out) store_block_bits(J.sign_out, J.kwout, J.nblk, blk, q, signs);
      }
    }
  }
}

template <int V, int Mode>
void run_v(const TileJob& Jin, int blk, int64_t n, int r0, int r1, int nvalid) {
  // Local copy: output stores (int32 / char) can then not alias the job's fields.
  const TileJob J = Jin;
  constexpr int PMAX = kTilePixelsAvx512;
  const uint64_t* ximg = J.x + n * J.x_img_stride;
  int r = r0;
  for (; r + PMAX <= r1; r += PMAX) tile<PMAX, V, Mode>(J, blk, ximg, n, r, nvalid);
  static_assert(PMAX <= 6, "tile sizes above 6 are not instantiated");
  switch (r1 - r) {
    case 5: tile<5, V, Mode>(J, blk, ximg, n, r, nvalid); break;
    case 4: tile<4, V, Mode>(J, blk, ximg, n, r, nvalid); break;
    case 3: tile<3, V, Mode>(J, blk, ximg, n, r, nvalid); break;
    case 2: tile<2, V, Mode>(J, blk, ximg, n, r, nvalid); break;
    case 1: tile<1, V, Mode>(J, blk, ximg, n, r, nvalid); break;
    default: break;
  }
}

template <int Mode>
void run_blocks(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1) {
  for (int blk = blk0; blk < blk1; ++blk) {
    const int nvalid = (J.cout - blk * kBlock) < kBlock ? (J.cout - blk * kBlock) : kBlock;
    switch ((nvalid + 7) / 8) {
      case 4: run_v<4, Mode>(J, blk, n, r0, r1, nvalid); break;
      case 3: run_v<3, Mode>(J, blk, n, r0, r1, nvalid); break;
      case 2: run_v<2, Mode>(J, blk, n, r0, r1, nvalid); break;
      default: run_v<1, Mode>(J, blk, n, r0, r1, nvalid); break;
    }
  }
}

}  // namespace

void tile_run_avx512(const TileJob& J, int blk0, int blk1, int64_t n, int r0, int r1) {
  switch (J.mode) {
    case kModeInt: run_blocks<kModeInt>(J, blk0, blk1, n, r0, r1); break;
    case kModeFloat: run_blocks<kModeFloat>(J, blk0, blk1, n, r0, r1); break;
    default: run_blocks<kModeBits>(J, blk0, blk1, n, r0, r1); break;
  }
}

}  // namespace onebit
