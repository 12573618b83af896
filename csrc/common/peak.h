// onebit/csrc/common/peak.h
// Popcount-peak microbenchmark: a tight, dependency-free loop of the same instruction mix
// as the conv kernels' inner loop (per 64*L bits: XOR with a broadcast word, popcount,
// add into a lane accumulator) over L1-resident data. One "binary MAC" = one bit.
//   peak_kernel_<isa>(iters, x) returns the number of binary MACs executed.
#pragma once
#include <cstdint>

namespace onebit {

double peak_kernel_portable(int64_t iters, const uint64_t* x, uint64_t* sink);
#ifdef ONEBIT_HAVE_X86_KERNELS
double peak_kernel_avx2(int64_t iters, const uint64_t* x, uint64_t* sink);
double peak_kernel_avx512(int64_t iters, const uint64_t* x, uint64_t* sink);
#endif

// Runs the current ISA's peak kernel on `threads` threads for ~`seconds`;
// returns binary MAC/s summed over threads.
double peak_microbench(int threads, double seconds);

}  // namespace onebit
