// onebit/csrc/elementwise/affine.h
// Per-channel output transform of the float layers the engine runs outside the binary kernels
// (a real first conv, an eval-mode BatchNorm after a pooling): in place over rows of C floats,
//     y = fl(y * mult[c]);  y = fl(y + bias[c]);  y = max(y, 0) if relu
// — the same two roundings as NumPy's `y * mult + bias` in float32 (no fused multiply-add).
#pragma once
#include <cstdint>

namespace onebit {

void channel_affine_inplace(float* y, int64_t rows, int64_t C, const float* mult, const float* bias, bool relu,
                            int threads);

}  // namespace onebit
