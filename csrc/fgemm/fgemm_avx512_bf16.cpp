// onebit/csrc/fgemm/fgemm_avx512_bf16.cpp — AVX512_BF16 block of the bf16 / bf16x3 float conv
// (compiled with -mavx512f -mavx512bw -mavx512bf16; called only after avx512_bf16_usable()). For
// CPUs with VDPBF16PS but no AMX (Zen 4, Cooper Lake). Per pair of K values, VDPBF16PS adds
//     acc[n] += a[k] b[k, n] + a[k+1] b[k+1, n]        (bf16 products, exact in float; float sums)
// for 16 columns n at once; the B halves are already in that pair layout ((Kb/2) x Np x 2, the
// AMX-BF16 B layout), the A pair is one 32-bit broadcast. Micro-tile: R rows x NV vectors of 16
// columns in R*NV zmm accumulators, NV weight vectors loaded per pair of K and shared by the R
// rows. Like the AMX path (and unlike the portable twin's k-ordered sum) the two products of a
// pair are summed in the instruction's order and denormals are flushed (DAZ/FTZ): results agree
// with the reference to float rounding of the sum, not bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "fgemm/fgemm.h"

namespace onebit {

namespace {

inline __m512bh broadcast_pair(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return (__m512bh)_mm512_set1_epi32(v);
}

// acc rows [0, R) x columns [n0, n0 + 16 NV) of the block; THREE: hi·hi + hi·lo + lo·hi per pair
template <int R, int NV, bool THREE>
inline void tile(const uint16_t* Ah, const uint16_t* Al, int64_t lda, const uint16_t* Bh, const uint16_t* Bl,
                 int64_t ldb, int pairs, float* C, int64_t ldc) {
  __m512 c[R][NV];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) c[i][j] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    __m512bh bh[NV], bl[NV];
    for (int j = 0; j < NV; ++j) {
      bh[j] = (__m512bh)_mm512_loadu_si512(Bh + p * ldb + 32 * j);
      if (THREE) bl[j] = (__m512bh)_mm512_loadu_si512(Bl + p * ldb + 32 * j);
    }
    for (int i = 0; i < R; ++i) {
      const __m512bh ah = broadcast_pair(Ah + i * lda + 2 * p);
      for (int j = 0; j < NV; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], ah, bh[j]);
      if (THREE) {
        for (int j = 0; j < NV; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], ah, bl[j]);
        const __m512bh al = broadcast_pair(Al + i * lda + 2 * p);
        for (int j = 0; j < NV; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], al, bh[j]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(C + i * ldc + 16 * j, c[i][j]);
}

// the tile of exactly `rows` rows (1 <= rows <= R)
template <int R, int NV, bool THREE>
inline void tile_of(int rows, const uint16_t* Ah, const uint16_t* Al, int64_t lda, const uint16_t* Bh,
                    const uint16_t* Bl, int64_t ldb, int pairs, float* C, int64_t ldc) {
  if constexpr (R > 1) {
    if (rows < R) return tile_of<R - 1, NV, THREE>(rows, Ah, Al, lda, Bh, Bl, ldb, pairs, C, ldc);
  }
  tile<R, NV, THREE>(Ah, Al, lda, Bh, Bl, ldb, pairs, C, ldc);
}

// rows [0, rows) in tiles of RMAX rows (the last one shorter), columns [n0, n0 + 16 NV)
template <int RMAX, int NV, bool THREE>
inline void column_panel(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, int rows, int n0,
                         float* acc) {
  const int64_t lda = W.Kb, ldb = static_cast<int64_t>(W.Np) * 2, ldc = W.Np;
  const int pairs = (W.K + 1) / 2;  // the zero padding past K (to Kb, for AMX) adds nothing
  const uint16_t* bh = W.hi.data() + static_cast<int64_t>(n0) * 2;
  const uint16_t* bl = W.lo.data() + static_cast<int64_t>(n0) * 2;
  for (int r = 0; r < rows; r += RMAX)
    tile_of<RMAX, NV, THREE>(std::min(RMAX, rows - r), Ah + r * lda, THREE ? Al + r * lda : nullptr, lda, bh, bl,
                             ldb, pairs, acc + r * ldc + n0, ldc);
}

template <int RMAX, bool THREE>
void block(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, int rows, float* acc) {
  int n0 = 0;
  for (; n0 + 64 <= W.Np; n0 += 64) column_panel<RMAX, 4, THREE>(Ah, Al, W, rows, n0, acc);
  if (n0 < W.Np) column_panel<RMAX, 2, THREE>(Ah, Al, W, rows, n0, acc);  // Np is a multiple of 32
}

}  // namespace

void fgemm_bf16x3_block_avx512bf16(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, int rows,
                                   float* acc) {
  // one term: 6 x 4 accumulators + 4 weight vectors; three terms: 4 x 4 + 8 (hi and lo weights)
  if (Al)
    block<4, true>(Ah, Al, W, rows, acc);
  else
    block<6, false>(Ah, Al, W, rows, acc);
}

}  // namespace onebit
