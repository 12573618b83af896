// onebit/csrc/bitpack/bitpack.h
// Bit packing of ±1 (sign) tensors along the last axis.
//
//   pack:   p[r, c/64] bit (c%64) = (x[r, c] < 0)        (so sign(x)=+1 for x >= 0 -> bit 0,
//           -0.0 and +0.0 -> bit 0 (+1); NaN -> bit 0; tail bits of the last word are 0)
//   unpack: y[r, c] = bit ? -1.0f : +1.0f
//
// One implementation per ISA path; the driver (bitpack.cpp) splits rows over threads.
#pragma once
#include <cstdint>

namespace onebit {

void pack_rows_portable(const float* x, int64_t rows, int64_t C, uint64_t* out);
void unpack_rows_portable(const uint64_t* p, int64_t rows, int64_t C, float* out);
#ifdef ONEBIT_HAVE_X86_KERNELS
void pack_rows_avx2(const float* x, int64_t rows, int64_t C, uint64_t* out);
void unpack_rows_avx2(const uint64_t* p, int64_t rows, int64_t C, float* out);
void pack_rows_avx512(const float* x, int64_t rows, int64_t C, uint64_t* out);
void unpack_rows_avx512(const uint64_t* p, int64_t rows, int64_t C, float* out);
#endif

// Driver: dispatch on the current ISA and split rows over `threads` threads.
void pack_bits(const float* x, int64_t rows, int64_t C, uint64_t* out, int threads);
void unpack_bits(const uint64_t* p, int64_t rows, int64_t C, float* out, int threads);

}  // namespace onebit
