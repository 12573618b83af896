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

// A: M rows of lda >= Kp bytes (columns K..Kp-1 must be 0), int8, or uint8 when a_unsigned.
// C: M rows of ldc floats. use_amx: run the AMX path (caller checked amx_int8_usable()), else
// the portable one.
void igemm_s8(const int8_t* A, int64_t M, int64_t lda, const Int8Weights& W, const float* scale,
              const float* bias, float* C, int64_t ldc, bool use_amx, int threads, bool a_unsigned = false);

// the two paths (one M-block x all N), used by igemm_s8
void igemm_block_ref(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned);
void igemm_block_amx(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned);

}  // namespace onebit
