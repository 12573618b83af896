// onebit/csrc/fgemm/fgemm_avx2.cpp — AVX2 + FMA float block product (compiled with -mavx2 -mfma;
// called only after the CPU check), for CPUs without AVX-512 (AMD Zen 1-3, Intel Haswell to Comet
// Lake) and those whose AVX-512 lacks VPOPCNTDQ (Skylake-X, Cascade Lake), where the engine's
// active ISA path is avx2. Micro-tile: 6 rows x 16 columns in 12 ymm accumulators; per k two
// weight vectors are loaded and each row's x[k] broadcast into two FMAs (15 of the 16 ymm
// registers). The last rows % 6 rows run in a tile of exactly that many rows (32 columns wide for
// 1-2 rows). K is cut into chunks of kKC so the weight panel stays in L1 while all micro-tiles of
// the block pass over it; partial sums go through `acc`. Each output is one k-ordered float sum
// with one FMA per term, as on the AVX-512 path: the two paths give the same bits.
#include <immintrin.h>

#include "fgemm/fgemm.h"

namespace onebit {

namespace {

// R rows x P 8-float vectors of columns from n0, for k in [kc0, kc1): R*P accumulators, P weight
// vectors per k, each row's x[k] broadcast into P FMAs. kc0 > 0 continues the partial sums in acc.
template <int R, int P>
inline void tile(const float* A, int K, const float* B, int Np, float* acc, int n0, int kc0, int kc1) {
  float* o = acc + n0;
  __m256 c[R][P];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < P; ++j)
      c[i][j] = kc0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(o + static_cast<int64_t>(i) * Np + 8 * j);
  const float* b = B + static_cast<int64_t>(kc0) * Np + n0;
  for (int k = kc0; k < kc1; ++k, b += Np) {
    __m256 bv[P];
    for (int j = 0; j < P; ++j) bv[j] = _mm256_loadu_ps(b + 8 * j);
    for (int i = 0; i < R; ++i) {  // x[k] as a value: from _mm256_broadcast_ss's pointer GCC stored
      // every accumulator to the stack each k (they may alias); set1 keeps them in registers
      const __m256 av = _mm256_set1_ps(A[static_cast<int64_t>(i) * K + k]);
      for (int j = 0; j < P; ++j) c[i][j] = _mm256_fmadd_ps(av, bv[j], c[i][j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < P; ++j) _mm256_storeu_ps(o + static_cast<int64_t>(i) * Np + 8 * j, c[i][j]);
}

// the columns [n_begin, n_end) (multiples of 32) of R rows in tiles of 8*P columns (P = 2 or 4)
template <int R, int P>
inline void row_strip(const float* A, int K, const float* B, int Np, float* acc, int n_begin, int n_end, int kc0,
                      int kc1) {
  for (int n0 = n_begin; n0 < n_end; n0 += 8 * P) tile<R, P>(A, K, B, Np, acc, n0, kc0, kc1);
}

}  // namespace

void fgemm_block_avx2(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin, int n_end) {
  constexpr int kKC = 256;
  const int K = W.K, Np = W.Np;
  if (n_end < 0) n_end = Np;
  const float* B = W.packed.data();
  const int full = rows / 6 * 6;
  for (int kc0 = 0; kc0 < K; kc0 += kKC) {
    const int kc1 = kc0 + kKC < K ? kc0 + kKC : K;
    for (int n0 = n_begin; n0 < n_end; n0 += 16)
      for (int r0 = 0; r0 < full; r0 += 6)
        tile<6, 2>(A + static_cast<int64_t>(r0) * K, K, B, Np, acc + static_cast<int64_t>(r0) * Np, n0, kc0, kc1);
    // the last rows % 6 rows (a dense layer at batch 1, a map of 49 pixels): no zero rows are multiplied
    const float* a = A + static_cast<int64_t>(full) * K;
    float* o = acc + static_cast<int64_t>(full) * Np;
    switch (rows - full) {
      case 1: row_strip<1, 4>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 2: row_strip<2, 4>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 3: row_strip<3, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 4: row_strip<4, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      case 5: row_strip<5, 2>(a, K, B, Np, o, n_begin, n_end, kc0, kc1); break;
      default: break;
    }
  }
}

}  // namespace onebit
