// onebit/csrc/bconv/bmaxpool.cpp
// Driver of the packed max/min pool: ISA dispatch and a split of output pixels into chunks.
#include "bconv/bmaxpool.h"

#include <algorithm>

#include "common/isa.h"
#include "common/thread_pool.h"

namespace onebit {

void bmaxpool_run(const PoolJob& J, int threads) {
  using Fn = void (*)(const PoolJob&, int64_t, int64_t);
  Fn fn = maxpool_run_portable;
#ifdef ONEBIT_HAVE_X86_KERNELS
  if (current_isa() == Isa::Avx512) fn = maxpool_run_avx512;
  else if (current_isa() == Isa::Avx2) fn = maxpool_run_avx2;
#endif
  const int64_t Q = J.N * J.OH * J.OW;
  if (Q <= 0) return;
  // ~ 4K words of output per thread at least, or it is not worth waking a worker.
  const int T = resolve_threads(threads, std::min<int64_t>(Q, (Q * J.kwin * J.kh * J.kw) / 4096));
  if (T <= 1) return fn(J, 0, Q);
  const int64_t nch = std::min<int64_t>(Q, 4 * T);
  parallel_for(T, nch, [&](int64_t c) {
    int64_t b, e;
    split_range(Q, nch, c, &b, &e);
    if (e > b) fn(J, b, e);
  });
}

}  // namespace onebit
