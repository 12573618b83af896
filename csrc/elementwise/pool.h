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

// Output rows [oy0, oy1) of image 0 of the pooling, on the calling thread (AVX-512 or the portable
// twin, as pool2d_f32 dispatches), from a map whose first stored row is row `row0` of the input:
// the windows of these rows must not reach above row0 (g.H clips them below). The conv + pool
// fusion pools the conv rows it has just computed this way.
void pool_rows_f32(const float* x, const PoolGeom& g, bool is_max, float* out, int oy0, int oy1, int row0);

#ifdef ONEBIT_HAVE_X86_KERNELS
// One output row (n, oy) on AVX-512 (x: the map from its row row0 on).
void pool_row_avx512(const float* x, const PoolGeom& g, bool is_max, float* out, int64_t n, int oy, int row0 = 0);
#endif

}  // namespace onebit
