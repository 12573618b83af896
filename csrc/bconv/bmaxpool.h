// onebit/csrc/bconv/bmaxpool.h
// Max-pooling of +-1 feature maps directly on packed NHWC bits (PyTorch max_pool2d
// semantics: floor output size, padded positions ignored, padding <= kernel/2).
//   +1 = bit 0, so max over a window = AND of the bits, min = OR of the bits:
//   out[n,oh,ow,k] = (AND_win x & ~m[k]) | (OR_win x & m[k])
// where m = min_mask (per-channel-word mask): channels flagged in m are min-pooled (pooling
// real values, then a BN with negative gamma, then sign, equals a min-pool of the signs).
#pragma once
#include <cstdint>

namespace onebit {

struct PoolJob {
  const uint64_t* x;  // (N, H, W, kwin)
  int64_t N;
  int H, W, kwin;
  int kh, kw, sh, sw, ph, pw;
  int OH, OW;
  const uint64_t* min_mask;  // kwin words (all-zero mask = pure max pool)
  uint64_t* out;             // (N, OH, OW, kwin)
};

void maxpool_run_portable(const PoolJob& J, int64_t q0, int64_t q1);
#ifdef ONEBIT_HAVE_X86_KERNELS
void maxpool_run_avx2(const PoolJob& J, int64_t q0, int64_t q1);
void maxpool_run_avx512(const PoolJob& J, int64_t q0, int64_t q1);
#endif

void bmaxpool_run(const PoolJob& J, int threads);

}  // namespace onebit
