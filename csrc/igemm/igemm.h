// onebit/csrc/igemm/igemm.h
// int8 GEMM for binary-weight networks (BWN / BWNH, methods.md §3): activations quantised to
// int8 with a calibrated scale, weights +-1 (exact in int8), int32 accumulators, then a float
// output transform per output column:
//     C[m, n] = fl(fl(float(sum_k A[m, k] * W[n, k]) * scale[n]) + bias[n])     (no FMA)
// A is int8 (s8 x s8) or uint8 (u8 x s8: non-negative activations, pixels).
// Paths: AMX-INT8 (Sapphire Rapids and later; tiles of 16x64 bytes, TDPBSSD), and the
// portable reference twin (plain C++). Both give identical int32 sums, hence identical output.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace onebit {

struct Int8Weights {
  int N = 0, K = 0;      // real sizes
  int Kp = 0, Np = 0;    // K padded to a multiple of 64, N to a multiple of 32
  std::vector<int8_t> plain;  // N x Kp, row-major, zero padded (portable path)
  std::vector<int8_t> vnni;   // (Kp/4) x Np x 4: AMX B-tile layout, zero padded
};

// w: N x K int8 row-major.
Int8Weights prepare_int8_weights(const int8_t* w, int N, int K);

// True when the CPU has AMX-INT8 and the OS granted this process the tile state.
bool amx_int8_usable();
// True when the CPU has the AMX tile architecture and the OS granted this process the tile
// state (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked once).
bool amx_tile_permission();

// A: M rows of lda >= Kp bytes (columns K..Kp-1 must be 0), int8, or uint8 when a_unsigned.
// C: M rows of ldc floats. use_amx: run the AMX path (caller checked amx_int8_usable()), else
// the portable one.
void igemm_s8(const int8_t* A, int64_t M, int64_t lda, const Int8Weights& W, const float* scale,
              const float* bias, float* C, int64_t ldc, bool use_amx, int threads, bool a_unsigned = false);

// the two paths (one M-block x all N), used by igemm_s8
void igemm_block_ref(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned);
void igemm_block_amx(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned);
// the same without loading/releasing the tile configuration: between amx_tiles_begin() and
// amx_tiles_end() on the calling thread (loading the configuration costs more than a small block)
void amx_tiles_begin();
void amx_tiles_end();
void igemm_block_amx_configured(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc,
                                bool a_unsigned);

}  // namespace onebit

namespace onebit {

// Fused int8 convolution for binary-weight layers: quantise the float NHWC input once
// (q = clip(rint(x * inv_scale), lo, hi), lo/hi = -127/127, or 0/255 when a_unsigned; zero
// padding is q = 0), then per block of 32 output pixels gather the (kh, kw, C) patches into
// an A tile (im2col in cache) and run the int8 GEMM block against W (K = kh*kw*C, (kh, kw, C)
// order). Output transform per channel, in this order, each rounded to float:
//     y = fl(fl(float(acc) * scale[n]) + bias[n]);  y = fl(y + residual) if residual;
//     y = max(y, 0) if relu.
// x: N x H x W x C float; out: N x OH x OW x W.N float (residual: the same shape, or null).
struct IConvGeom {
  int N, H, W, C, kh, kw, sh, sw, ph, pw;
  int OH() const { return (H + 2 * ph - kh) / sh + 1; }
  int OW() const { return (W + 2 * pw - kw) / sw + 1; }
};
void iconv2d_s8(const float* x, const IConvGeom& g, float inv_scale, bool a_unsigned, const Int8Weights& W,
                const float* scale, const float* bias, const float* residual, bool relu, float* out,
                bool use_amx, int threads);

// The quantisation step alone: q = clip(rint(x * inv_scale), lo, hi) as int8 (or uint8), written
// into rows of ldq >= cols bytes whose columns cols..ldq-1 are set to 0 (the GEMM's K padding).
void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, float inv_scale, bool a_unsigned, int8_t* q,
                      int64_t ldq, int threads);

}  // namespace onebit
