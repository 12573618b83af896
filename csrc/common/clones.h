// onebit/csrc/common/clones.h
// ONEBIT_CLONES: compile a generic loop (an epilogue, pooling) for AVX-512, AVX2 and plain
// x86-64, and let the loader pick the best version for this CPU (GCC target_clones, an ifunc).
// Elsewhere it is empty and the loop is compiled once for the baseline.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ONEBIT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ONEBIT_CLONES
#endif
