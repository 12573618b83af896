// onebit/csrc/common/thread_pool.cpp
// Persistent workers. Each participant t of a job owns a static home range of chunks, held
// in a 64-bit atomic word [gen:16][end:24][next:24]; it claims its own chunks first, then
// steals from the other ranges. A claim (compare-exchange) is valid for exactly one job
// (generation): a stale worker's claim fails once the generation moved on. The job (fn,
// done counter) lives in one of two slots (gen & 1); a slot is reused two generations
// later, i.e. only after every chunk of its job has completed. Workers spin briefly after a job
// they took part in (back-to-back layer calls do not pay a futex wake-up), then sleep on their
// own condition variable, woken only for a job they take part in. A fork() child gets a fresh
// pool.
#include "common/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
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

constexpr int kSpinIters = 20000;  // ~1 ms of pause instructions (covers the NumPy work between two layers)
constexpr int kMaxThreads = 255;
constexpr uint64_t kM24 = (uint64_t(1) << 24) - 1;

// state_: [gen:16][threads:8][unused:16][n:24]; range r: [gen:16][end:24][next:24]
inline uint64_t st_gen(uint64_t s) { return s >> 48; }
inline int st_threads(uint64_t s) { return static_cast<int>((s >> 40) & 0xFF); }
inline uint64_t rg_end(uint64_t v) { return (v >> 24) & kM24; }
inline uint64_t rg_next(uint64_t v) { return v & kM24; }

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
    for (int r = 0; r < nthreads; ++r) {  // static home range of each participant
      const uint64_t b = static_cast<uint64_t>(n * r / nthreads);
      const uint64_t e = static_cast<uint64_t>(n * (r + 1) / nthreads);
      ranges_[r].store((g << 48) | (e << 24) | b, std::memory_order_relaxed);
    }
    const uint64_t s = (g << 48) | (static_cast<uint64_t>(nthreads) << 40) | static_cast<uint64_t>(n);
    {
      std::lock_guard<std::mutex> lk(m_);
      state_.store(s, std::memory_order_release);
    }
    for (int w = 1; w < nthreads; ++w) wake_[w - 1].notify_one();  // only this job's participants
    participate(0, s);
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

  // Claims the next chunk of range r if it still belongs to generation g.
  bool claim(int r, uint64_t g, uint64_t* c) {
    uint64_t v = ranges_[r].load(std::memory_order_acquire);
    for (;;) {
      if ((v >> 48) != g || rg_next(v) >= rg_end(v)) return false;
      if (ranges_[r].compare_exchange_weak(v, v + 1, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
        *c = rg_next(v);
        return true;
      }
    }
  }

  // Runs the chunks of the home range first (same chunks -> same thread on every call when
  // nobody is late: cache affinity), then steals from the other ranges.
  void participate(int id, uint64_t s) {
    const uint64_t g = st_gen(s);
    const int T = st_threads(s);
    if (id >= T) return;
    Slot& sl = slots_[g & 1];
    uint64_t c;
    for (int k = 0; k < T; ++k) {
      const int r = (id + k) % T;
      while (claim(r, g, &c)) {
        (*sl.fn)(static_cast<int64_t>(c));
        sl.done.fetch_add(1, std::memory_order_release);
      }
    }
  }

  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      // the worker's own condition variable, made before the thread and handed to it by address
      // (a deque keeps addresses when it grows; the worker never indexes it, run() alone does)
      std::condition_variable* wake = &wake_.emplace_back();
      workers_.emplace_back([this, id, wake] { loop(id, *wake); });
      workers_.back().detach();
    }
  }

  // A worker spins for the next job (~1 ms) only after a job it took part in, and sleeps on its
  // own condition variable until a job it takes part in: one beyond a job's thread count (the pool
  // grew for a wider call earlier) is neither woken nor spinning, so it takes no core from the
  // participants of narrower calls (measured: a 2-thread call after a 4-thread one was 2× slower
  // on 2 cores when idle workers spun and were woken for every call).
  void loop(int id, std::condition_variable& wake) {
    uint64_t seen = st_gen(state_.load(std::memory_order_acquire));
    bool spin = false;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      for (int k = 0; spin && st_gen(s) == seen && k < kSpinIters; ++k) {
        cpu_relax();
        s = state_.load(std::memory_order_acquire);
      }
      if (st_gen(s) == seen || id >= st_threads(s)) {  // nothing for this worker (yet)
        const uint64_t last = st_gen(s);
        std::unique_lock<std::mutex> lk(m_);
        wake.wait(lk, [&] {
          s = state_.load(std::memory_order_acquire);
          return st_gen(s) != last && id < st_threads(s);
        });
      }
      seen = st_gen(s);
      spin = true;
      participate(id, s);
    }
  }

  std::mutex call_mutex_;
  std::mutex m_;
  std::deque<std::condition_variable> wake_;  // one per worker (id - 1)
  std::atomic<uint64_t> state_{0};
  std::atomic<uint64_t> ranges_[kMaxThreads];
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
  t = std::min<int64_t>(t, kMaxThreads);
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
