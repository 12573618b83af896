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
    for (int k = 0; k < J.kwin; ++k) o[k] = pool_word(J, win, k);
  }
}

}  // namespace onebit
