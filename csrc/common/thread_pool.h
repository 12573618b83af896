// onebit/csrc/common/thread_pool.h
// A small persistent thread pool with a static "parallel run" primitive (no OpenMP, so the
// module can share a process with torch's libgomp). parallel_run(T, fn) calls fn(tid) for
// tid = 0..T-1, tid 0 on the calling thread, and returns when all are done. Kernels split
// their work statically by tid, so results never depend on scheduling.
#pragma once
#include <cstdint>
#include <functional>

namespace onebit {

// Global default thread count (set_num_threads); initialised to hardware_concurrency().
int get_num_threads();
void set_num_threads(int n);
// requested <= 0 means "use the global default"; the result is clamped to [1, max_units].
int resolve_threads(int requested, int64_t max_units);

void parallel_run(int nthreads, const std::function<void(int)>& fn);

// Static split of [0, n) into T near-equal contiguous ranges: range of part t.
inline void split_range(int64_t n, int T, int t, int64_t* b, int64_t* e) {
  *b = n * t / T;
  *e = n * (t + 1) / T;
}

}  // namespace onebit
