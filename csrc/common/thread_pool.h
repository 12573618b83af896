// onebit/csrc/common/thread_pool.h
// A small persistent thread pool (no OpenMP, so the module can share a process with torch's
// libgomp). parallel_for(T, C, fn) calls fn(c) exactly once for every chunk c in [0, C) on
// up to T threads (the caller and T-1 workers). Participant t first runs its own contiguous
// share of the chunks (so on an idle machine a thread gets the same chunks on every call:
// its weights stay in its L2), then steals the others' remaining chunks. A worker that
// wakes late (or is descheduled on a busy machine) finds its chunks already taken, so the
// caller never waits for a thread that has not started, only for chunks being computed.
// Results never depend on which thread ran a chunk.
// Not re-entrant: fn must not call parallel_for.
#pragma once
#include <cstdint>
#include <functional>

namespace onebit {

// Global default thread count (set_num_threads); initialised to hardware_concurrency().
int get_num_threads();
void set_num_threads(int n);
// requested <= 0 means "use the global default"; the result is clamped to [1, max_units].
int resolve_threads(int requested, int64_t max_units);

constexpr int64_t kMaxChunks = (int64_t(1) << 24) - 1;
void parallel_for(int nthreads, int64_t nchunks, const std::function<void(int64_t)>& fn);

// Static split of [0, n) into C near-equal contiguous ranges: range of part c.
inline void split_range(int64_t n, int64_t C, int64_t c, int64_t* b, int64_t* e) {
  *b = n * c / C;
  *e = n * (c + 1) / C;
}

}  // namespace onebit
