// onebit/csrc/common/peak_ref.cpp
// Portable path of the popcount peak loop: 8 independent scalar accumulators,
// acc_j += popcount(w_j ^ x[i]) (64 binary MACs each).
#include "common/peak.h"

namespace onebit {

double peak_kernel_portable(int64_t iters, const uint64_t* x, uint64_t* sink) {
  uint64_t w[8], acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < 8; ++j) w[j] = x[j] * 0x9E3779B97F4A7C15ULL;
  for (int64_t it = 0; it < iters; ++it) {
    const uint64_t v = x[it & 63];
    for (int j = 0; j < 8; ++j) acc[j] += __builtin_popcountll(w[j] ^ v);
  }
  uint64_t s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  *sink = s;
  return static_cast<double>(iters) * 8 * 64;
}

}  // namespace onebit
