// onebit/csrc/bconv/bmaxpool_window.h
// Valid input window [h0,h1) x [w0,w1) of an output pixel (shared by all pool paths).
#pragma once
#include "bconv/bmaxpool.h"

namespace onebit {
namespace {
struct PoolWin {
  int64_t n;
  int h0, h1, w0, w1;
};
static inline PoolWin pool_window(const PoolJob& J, int64_t q) {
  const int64_t hw = static_cast<int64_t>(J.OH) * J.OW;
  PoolWin r;
  r.n = q / hw;
  const int oh = static_cast<int>((q % hw) / J.OW), ow = static_cast<int>(q % J.OW);
  const int hs = oh * J.sh - J.ph, ws = ow * J.sw - J.pw;
  r.h0 = hs < 0 ? 0 : hs;
  r.h1 = hs + J.kh > J.H ? J.H : hs + J.kh;
  r.w0 = ws < 0 ? 0 : ws;
  r.w1 = ws + J.kw > J.W ? J.W : ws + J.kw;
  return r;
}
// One packed word k of output pixel q with window win: AND (max of +-1 bits, bit 1 = -1) or OR
// (min) of the window's words, chosen per bit by min_mask. The portable path and the vector
// paths' tails.
static inline uint64_t pool_word(const PoolJob& J, const PoolWin& win, int k) {
  uint64_t a = ~0ULL, b = 0;
  for (int h = win.h0; h < win.h1; ++h)
    for (int w = win.w0; w < win.w1; ++w) {
      const uint64_t v = J.x[((win.n * J.H + h) * J.W + w) * J.kwin + k];
      a &= v;
      b |= v;
    }
  return (a & ~J.min_mask[k]) | (b & J.min_mask[k]);
}
}  // namespace
}  // namespace onebit
