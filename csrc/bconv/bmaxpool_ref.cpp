// onebit/csrc/bconv/bmaxpool_ref.cpp
// Portable (reference) path of the packed max/min pool (equation in bmaxpool.h):
// one 64-bit word at a time.
#include "bconv/bmaxpool.h"
#include "bconv/bmaxpool_window.h"

namespace onebit {

void maxpool_run_portable(const PoolJob& J, int64_t q0, int64_t q1) {
  for (int64_t q = q0; q < q1; ++q) {
    const PoolWin win = pool_window(J, q);
    uint64_t* o = J.out + q * J.kwin;
    for (int k = 0; k < J.kwin; ++k) {
      uint64_t a = ~0ULL, b = 0;
      for (int h = win.h0; h < win.h1; ++h)
        for (int w = win.w0; w < win.w1; ++w) {
          const uint64_t v = J.x[((win.n * J.H + h) * J.W + w) * J.kwin + k];
          a &= v;
          b |= v;
        }
      o[k] = (a & ~J.min_mask[k]) | (b & J.min_mask[k]);
    }
  }
}

}  // namespace onebit
