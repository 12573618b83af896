// onebit/csrc/common/peak.cpp
// Driver of the popcount-peak microbenchmark: calibrates the iteration count on one thread,
// then runs T chunks of that size on T threads and reports total binary MAC/s (best of 3).
// On a busy machine a late worker makes the caller run its chunk too, which shows up as a
// lower rate: the peak is what the threads actually got.
#include "common/peak.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "common/isa.h"
#include "common/thread_pool.h"

namespace onebit {

double peak_microbench(int threads, double seconds) {
  using Fn = double (*)(int64_t, const uint64_t*, uint64_t*);
  Fn fn = peak_kernel_portable;
#ifdef ONEBIT_HAVE_X86_KERNELS
  if (current_isa() == Isa::Avx512) fn = peak_kernel_avx512;
  else if (current_isa() == Isa::Avx2) fn = peak_kernel_avx2;
#endif
  const int T = resolve_threads(threads, 1 << 20);
  std::vector<uint64_t> data(64 * T);
  for (size_t i = 0; i < data.size(); ++i) data[i] = (i + 1) * 0xD1B54A32D192ED03ULL;
  std::vector<uint64_t> sink(8 * T);
  using clock = std::chrono::steady_clock;
  // calibrate on one thread
  int64_t iters = 1 << 14;
  for (;;) {
    const auto t0 = clock::now();
    fn(iters, data.data(), sink.data());
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02 || iters > (int64_t(1) << 40)) {
      iters = std::max<int64_t>(1024, static_cast<int64_t>(iters * (seconds / 3) / dt));
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> macs(T, 0);
    const auto t0 = clock::now();
    parallel_for(T, T, [&](int64_t t) { macs[t] = fn(iters, data.data() + 64 * t, sink.data() + 8 * t); });
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    double total = 0;
    for (double m : macs) total += m;
    best = std::max(best, total / dt);
  }
  return best;
}

}  // namespace onebit
