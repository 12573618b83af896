// onebit/csrc/common/thread_pool.cpp
// Persistent worker threads woken by a generation counter. Workers spin briefly (so
// back-to-back layer calls do not pay a futex wake-up) and then sleep on a condition
// variable (so idle workers do not steal the cores from other work). Every worker
// acknowledges every generation, which makes reuse of the job slot race-free.
// One parallel region runs at a time (call_mutex); a fork() child gets a fresh pool.
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

constexpr int kSpinIters = 4000;  // ~ a few tens of microseconds of pause instructions

class Pool {
 public:
  void run(int n, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    ensure_workers(n - 1);
    job_ = &fn;
    job_n_ = n;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(m_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    int spins = 0;
    while (pending_.load(std::memory_order_acquire) != 0) {
      if (++spins < kSpinIters) cpu_relax();
      else std::this_thread::yield();
    }
    job_ = nullptr;
  }

 private:
  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      // A new worker starts at the current generation, so it waits for the next one.
      const uint64_t start_gen = gen_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, start_gen] { loop(id, start_gen); });
      workers_.back().detach();
    }
  }

  void loop(int id, uint64_t seen) {
    for (;;) {
      uint64_t g = gen_.load(std::memory_order_acquire);
      for (int s = 0; g == seen && s < kSpinIters; ++s) {
        cpu_relax();
        g = gen_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
        g = gen_.load(std::memory_order_acquire);
      }
      seen = g;
      if (id < job_n_) (*job_)(id);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex call_mutex_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
  int job_n_ = 0;
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
  t = std::min<int64_t>(t, 256);
  return static_cast<int>(std::max<int64_t>(t, 1));
}

void parallel_run(int nthreads, const std::function<void(int)>& fn) {
  if (nthreads <= 1) {
    fn(0);
    return;
  }
  pool()->run(nthreads, fn);
}

}  // namespace onebit
