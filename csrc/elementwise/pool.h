// onebit/csrc/elementwise/pool.h
// Max / average pooling of float NHWC maps with PyTorch's window placement (padding, ceil_mode),
// padding never counted: max ignores it (-inf), average divides each window's float64 sum by
// the number of its taps inside the image (exact for the unpadded windows the models use), then
// rounds once to float.
#pragma once
#include <cstdint>

namespace onebit {

struct PoolGeom {
  int N, H, W, C, kh, kw, sh, sw, ph, pw, OH, OW;
};

void pool2d_f32(const float* x, const PoolGeom& g, bool is_max, float* out, int threads);

#ifdef ONEBIT_HAVE_X86_KERNELS
// One output row (n, oy) on AVX-512.
void pool_row_avx512(const float* x, const PoolGeom& g, bool is_max, float* out, int64_t n, int oy);
#endif

}  // namespace onebit
