// onebit/csrc/fgemm/fgemm.h
// Float32 GEMM / convolution for the real-valued layers the engine keeps (the first conv of a
// BNN or a BWN, a Bi-Real stem, the last FC), so that the whole forward pass runs on the core's
// own thread pool: NumPy's BLAS would start its own threads, which then spin on the same cores.
//     y = fl(fl(sum_k x[m, k] * w[n, k]) * scale[n]) + bias[n]  (+ residual) (max 0 if relu)
// The sum runs in k order with one float accumulator (FMA on the AVX2 and AVX-512 paths, separate
// multiply and add on the portable twin), so results agree with a float64 reference to float
// rounding, not bit for bit with another BLAS.
#pragma once
#include "elementwise/pool.h"
#include <cstdint>
#include <vector>

#include "igemm/igemm.h"  // IConvGeom

namespace onebit {

struct FloatWeights {
  int N = 0, K = 0, Np = 0;     // Np: N padded to a multiple of 32
  std::vector<float> packed;    // K x Np, row-major, zero padded columns
  // bf16x3 (optional, prepare_float_weights(..., bf16x3 = true)): w = hi + lo with hi = bf16(w),
  // lo = bf16(w - hi), each in the AMX-BF16 B-tile layout (Kb/2) x Np x 2, Kb = K padded to 32
  int Kb = 0;
  std::vector<uint16_t> hi, lo;
};

// w: N x K float row-major (a conv's (C_out, kh, kw, C_in) flattened). bf16x3: also lay out the
// two bf16 halves for fconv2d_bf16x3.
FloatWeights prepare_float_weights(const float* w, int N, int K, bool bf16x3 = false);

// ---- bf16x3: the float conv as three bf16 products on AMX-BF16 ----
// x = xh + xl and w = wh + wl (each half the nearest bf16 of what is left), and
//     sum_k x w  ~  sum_k (xh wh + xh wl + xl wh)          (xl wl, ~2^-16 relative, dropped)
// with the products exact in float and float accumulation (TDPBF16PS). The relative error of a
// product is about 2^-16 instead of fp32's 2^-24: close to float, not bit-identical to it.
// Zero padding; output transform as fconv2d_f32. W must hold the bf16 halves.
// one_term: the plain bf16 conv instead, sum_k xh wh alone (relative error ~2^-8 per product, what
// a bf16 framework computes).
enum class Bf16Path : int { Portable = 0, Amx = 1, Avx512Bf16 = 2 };
// pool (optional): a max (pool_max) or average pooling of the conv's output fused in, `out` then
// holds the pooled map (N x pool->OH x pool->OW x N_out), bit for bit what pool2d_f32 gives on the
// conv's output; needs residual == nullptr and pool->H == OH, pool->W == OW, pool->C == N_out.
void fconv2d_bf16x3(const float* x, const IConvGeom& g, const FloatWeights& W, const float* scale,
                    const float* bias, const float* residual, bool relu, float* out, Bf16Path path, int threads,
                    bool one_term = false, const PoolGeom* pool = nullptr, bool pool_max = true);
// True when the CPU has AMX-BF16 (and AVX-512BW) and the OS granted the tile state.
bool amx_bf16_usable();
// True when the CPU has AVX512_BF16 (VDPBF16PS) and AVX-512BW, and the OS saves the zmm state.
bool avx512_bf16_usable();
// The patch rows of `rows` consecutive output pixels (from (n, oy, ox)) gathered from the split
// input (xh, xl: N x HP x WP x C, padded) into A blocks of block_rows rows of ld bf16 (ah, al);
// rows past `rows` are zeroed (al may be null: the hi halves only). Portable, and AVX-512BW
// masked moves (the AMX and AVX512_BF16 paths).
struct PatchGather {
  const uint16_t *xh, *xl;
  uint16_t *ah, *al;
  int ld, rows, block_rows;
  int64_t n, oy, ox;
  int OH, OW, HP, WP, C, sh, sw, kh;
  int64_t row_elems;  // kw * C
};
void gather_patches_bf16(const PatchGather& g);
void gather_patches_bf16_avx512(const PatchGather& g);
// acc (32 x Np) = Ah.Bh + Ah.Bl + Al.Bh for 32 rows of Kb bf16 (row stride Kb): AMX and portable
// twin; Ah.Bh alone when Al is null
void fgemm_bf16x3_block_amx(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, float* acc);
void fgemm_bf16x3_block_ref(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, float* acc);
// the same block on AVX512_BF16 (VDPBF16PS), for the first `rows` rows only (fgemm_avx512_bf16.cpp)
void fgemm_bf16x3_block_avx512bf16(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, int rows,
                                   float* acc);

// The block product's path: the portable twin, AVX2 + FMA (fgemm_avx2.cpp), AVX-512F.
enum class FloatPath : int { Portable = 0, Avx2 = 1, Avx512 = 2 };
// True when the CPU has AVX2 and FMA3 and the OS saves the ymm state (the Avx2 path runs); when it
// has AVX-512F and the OS saves the zmm state (the Avx512 path runs).
bool fgemm_avx2_usable();
bool fgemm_avx512_usable();

// x: N x H x W x C float (zero padding); out: N x OH x OW x W.N. A dense layer is the 1 x 1 conv
// of an (M, 1, 1, K) input.
void fconv2d_f32(const float* x, const IConvGeom& g, const FloatWeights& W, const float* scale, const float* bias,
                 const float* residual, bool relu, float* out, FloatPath path, int threads);

// out[r, c] = fl(acc[r, c] * scale[c]) + bias[c] (+ residual[r, c]) (max 0 if relu), r < rows,
// c < N; acc rows of ld floats (scale, bias, residual may be null)
// Only columns [c0, c1) when given (c1 < 0: up to N).
void float_epilogue(const float* acc, int ld, int rows, int N, const float* scale, const float* bias,
                    const float* residual, bool relu, float* out, int c0 = 0, int c1 = -1);

// The patch rows of `rows` consecutive output pixels (from (n, oy, ox)) gathered from the padded
// input x (N x HP x WP x C) into an A block of block_rows rows of ld floats; rows past `rows`
// are zeroed. Portable, and AVX-512 masked moves (the AVX-512 path only).
struct FloatPatchGather {
  const float* x;
  float* a;
  int64_t ld;
  int rows, block_rows;
  int64_t n, oy, ox;
  int OH, OW, HP, WP, C, sh, sw, kh;
  int64_t row_elems;  // kw * C
};
void gather_patches_f32(const FloatPatchGather& g);
void gather_patches_f32_avx512(const FloatPatchGather& g);

// acc (rows x Np) = A (rows x K, row stride K) . packed weights, for the columns [n_begin, n_end)
// (multiples of 32; n_end < 0: Np). Each output is one k-ordered float sum (FMA on AVX2/AVX-512), so a
// row's result does not depend on which rows share its block.
void fgemm_block_ref(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin = 0, int n_end = -1);
void fgemm_block_avx512(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin = 0,
                        int n_end = -1);
void fgemm_block_avx2(const float* A, int rows, const FloatWeights& W, float* acc, int n_begin = 0,
                      int n_end = -1);

}  // namespace onebit
