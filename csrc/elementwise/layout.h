// onebit/csrc/elementwise/layout.h
// The engine's input step: a batch in PyTorch's NCHW layout to the NHWC layout every kernel
// reads, in one pass on the core's threads (NumPy's transposing copy walks C = 3 in its inner
// loop and is several times slower). With pm1 a uint8 image also gets the BNN preprocessing,
//     y = fl(fl(float(x) / 127.5) - 1)
// — the two roundings of NumPy's `x.astype(float32) / float32(127.5) - float32(1)`.
#pragma once
#include <cstdint>

namespace onebit {

// x: N x C x H x W; out: N x H x W x C
void nchw_to_nhwc_f32(const float* x, float* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads);
void nchw_to_nhwc_u8(const uint8_t* x, uint8_t* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads);
void nchw_u8_to_nhwc_pm1(const uint8_t* x, float* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads);

}  // namespace onebit
