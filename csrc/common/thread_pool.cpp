// onebit/csrc/common/thread_pool.cpp
// Persistent workers claiming chunks from a single 64-bit atomic state word
//   [gen:16][threads:8][n:20][next:20]
// so that a claim is valid for exactly one job (generation) and one chunk: a stale worker's
// compare-exchange fails once the generation moved on. The job (fn, done counter) lives in
// one of two slots (gen & 1); a slot is reused two generations later, i.e. only after every
// chunk of its job has completed. Workers spin briefly after a job (back-to-back layer calls
// do not pay a futex wake-up), then sleep on a condition variable. A fork() child gets a
// fresh pool.
#include "common/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() { std::this_thread::yield(); }
#endif

namespace onebit {
namespace {

constexpr int kSpinIters = 2000;  // ~ tens of microseconds of pause instructions
constexpr uint64_t kM20 = (1u << 20) - 1;

inline uint64_t st_gen(uint64_t s) { return s >> 48; }
inline int st_threads(uint64_t s) { return static_cast<int>((s >> 40) & 0xFF); }
inline uint64_t st_n(uint64_t s) { return (s >> 20) & kM20; }
inline uint64_t st_next(uint64_t s) { return s & kM20; }

class Pool {
 public:
  void run(int nthreads, int64_t n, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    ensure_workers(nthreads - 1);
    const uint64_t g = (gen_ + 1) & 0xFFFF;
    gen_ = g;
    Slot& sl = slots_[g & 1];
    sl.fn = &fn;
    sl.done.store(0, std::memory_order_relaxed);
    const uint64_t s = (g << 48) | (static_cast<uint64_t>(nthreads) << 40) |
                       (static_cast<uint64_t>(n) << 20);
    {
      std::lock_guard<std::mutex> lk(m_);
      state_.store(s, std::memory_order_release);
    }
    cv_.notify_all();
    while (try_run_one(0)) {
    }
    int spins = 0;
    while (sl.done.load(std::memory_order_acquire) != n) {
      if (++spins < kSpinIters) cpu_relax();
      else std::this_thread::yield();
    }
  }

 private:
  struct Slot {
    const std::function<void(int64_t)>* fn = nullptr;
    std::atomic<int64_t> done{0};
  };

  bool try_run_one(int id) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (id >= st_threads(s) || st_next(s) >= st_n(s)) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        Slot& sl = slots_[st_gen(s) & 1];
        (*sl.fn)(static_cast<int64_t>(st_next(s)));
        sl.done.fetch_add(1, std::memory_order_release);
        return true;
      }
    }
  }

  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
      workers_.back().detach();
    }
  }

  void loop(int id) {
    uint64_t seen = st_gen(state_.load(std::memory_order_acquire));
    for (;;) {
      while (try_run_one(id)) {
      }
      uint64_t g = st_gen(state_.load(std::memory_order_acquire));
      for (int s = 0; g == seen && s < kSpinIters; ++s) {
        cpu_relax();
        g = st_gen(state_.load(std::memory_order_acquire));
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return st_gen(state_.load(std::memory_order_acquire)) != seen; });
        g = st_gen(state_.load(std::memory_order_acquire));
      }
      seen = g;
    }
  }

  std::mutex call_mutex_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  uint64_t gen_ = 0;  // guarded by call_mutex_
  Slot slots_[2];
  std::vector<std::thread> workers_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_create;
std::atomic<int> g_num_threads{0};

void atfork_child() {
  // The child has no worker threads; leak the parent's pool object (its mutexes may be held).
  g_pool.store(nullptr);
  new (&g_pool_create) std::mutex();
}

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  std::lock_guard<std::mutex> lk(g_pool_create);
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    static bool registered = false;
    if (!registered) {
      pthread_atfork(nullptr, nullptr, atfork_child);
      registered = true;
    }
    p = new Pool();  // intentionally never destroyed (workers are detached)
    g_pool.store(p, std::memory_order_release);
  }
  return p;
}

}  // namespace

int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
  }
  return n;
}

void set_num_threads(int n) { g_num_threads.store(n, std::memory_order_relaxed); }

int resolve_threads(int requested, int64_t max_units) {
  int64_t t = requested > 0 ? requested : get_num_threads();
  t = std::min<int64_t>(t, std::max<int64_t>(max_units, 1));
  t = std::min<int64_t>(t, 255);
  return static_cast<int>(std::max<int64_t>(t, 1));
}

void parallel_for(int nthreads, int64_t nchunks, const std::function<void(int64_t)>& fn) {
  if (nchunks <= 0) return;
  if (nthreads <= 1 || nchunks == 1) {
    for (int64_t c = 0; c < nchunks; ++c) fn(c);
    return;
  }
  // More chunks than the state word can count: group them.
  if (nchunks > kMaxChunks) {
    const int64_t groups = kMaxChunks;
    pool()->run(nthreads, groups, [&](int64_t gidx) {
      int64_t b, e;
      split_range(nchunks, groups, gidx, &b, &e);
      for (int64_t c = b; c < e; ++c) fn(c);
    });
    return;
  }
  pool()->run(nthreads, nchunks, fn);
}

}  // namespace onebit
