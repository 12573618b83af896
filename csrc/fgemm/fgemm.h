// onebit/csrc/fgemm/fgemm.h
// Float32 GEMM / convolution for the real-valued layers the engine keeps (the first conv of a
// BNN or a BWN, a Bi-Real stem, the last FC), so that the whole forward pass runs on the core's
// own thread pool: NumPy's BLAS would start its own threads, which then spin on the same cores.
//     y = fl(fl(sum_k x[m, k] * w[n, k]) * scale[n]) + bias[n]  (+ residual) (max 0 if relu)
// The sum runs in k order with one float accumulator (FMA on the AVX-512 path, separate
// multiply and add on the portable twin), so results agree with a float64 reference to float
// rounding, not bit for bit with another BLAS.
#pragma once
#include <cstdint>
#include <vector>

#include "igemm/igemm.h"  // IConvGeom

namespace onebit {

struct FloatWeights {
  int N = 0, K = 0, Np = 0;     // Np: N padded to a multiple of 32
  std::vector<float> packed;    // K x Np, row-major, zero padded columns
};

// w: N x K float row-major (a conv's (C_out, kh, kw, C_in) flattened).
FloatWeights prepare_float_weights(const float* w, int N, int K);

// x: N x H x W x C float (zero padding); out: N x OH x OW x W.N. A dense layer is the 1 x 1 conv
// of an (M, 1, 1, K) input.
void fconv2d_f32(const float* x, const IConvGeom& g, const FloatWeights& W, const float* scale, const float* bias,
                 const float* residual, bool relu, float* out, bool use_avx512, int threads);

// acc (rows x Np) = A (rows x K, rows a multiple of 8, row stride K) . packed weights
void fgemm_block_ref(const float* A, int rows, const FloatWeights& W, float* acc);
void fgemm_block_avx512(const float* A, int rows, const FloatWeights& W, float* acc);

}  // namespace onebit
