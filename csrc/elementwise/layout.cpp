// onebit/csrc/elementwise/layout.cpp — NCHW -> NHWC (see layout.h). One task per image row
// (n, h): the C planes' rows are read in turn and written interleaved; compiled per CPU.
#include "elementwise/layout.h"

#include "common/clones.h"
#include "common/thread_pool.h"

namespace onebit {

namespace {

template <typename In, typename Out, typename F>
inline void row_to_nhwc(const In* x, Out* out, int64_t C, int64_t H, int64_t W, int64_t row, F f) {
  const int64_t n = row / H, h = row % H;
  Out* o = out + row * W * C;
  for (int64_t c = 0; c < C; ++c) {
    const In* src = x + ((n * C + c) * H + h) * W;
    for (int64_t w = 0; w < W; ++w) o[w * C + c] = f(src[w]);
  }
}

ONEBIT_CLONES void rows_f32(const float* x, float* out, int64_t C, int64_t H, int64_t W, int64_t row) {
  row_to_nhwc(x, out, C, H, W, row, [](float v) { return v; });
}

ONEBIT_CLONES void rows_u8(const uint8_t* x, uint8_t* out, int64_t C, int64_t H, int64_t W, int64_t row) {
  row_to_nhwc(x, out, C, H, W, row, [](uint8_t v) { return v; });
}

ONEBIT_CLONES void rows_pm1(const uint8_t* x, float* out, int64_t C, int64_t H, int64_t W, int64_t row) {
  row_to_nhwc(x, out, C, H, W, row, [](uint8_t v) { return static_cast<float>(v) / 127.5f - 1.0f; });
}

}  // namespace

void nchw_to_nhwc_f32(const float* x, float* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads) {
  parallel_for(resolve_threads(threads, N * H), N * H, [&](int64_t r) { rows_f32(x, out, C, H, W, r); });
}

void nchw_to_nhwc_u8(const uint8_t* x, uint8_t* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads) {
  parallel_for(resolve_threads(threads, N * H), N * H, [&](int64_t r) { rows_u8(x, out, C, H, W, r); });
}

void nchw_u8_to_nhwc_pm1(const uint8_t* x, float* out, int64_t N, int64_t C, int64_t H, int64_t W, int threads) {
  parallel_for(resolve_threads(threads, N * H), N * H, [&](int64_t r) { rows_pm1(x, out, C, H, W, r); });
}

}  // namespace onebit
