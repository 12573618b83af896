// onebit/csrc/bitpack/bitpack_ref.cpp
// Portable (reference) path of bit packing:
//   p[r, c/64] |= (x[r, c] < 0) << (c % 64);   y[r, c] = bit ? -1 : +1.
// A float comparison (not a copy of the IEEE sign bit), so -0.0 packs as +1 (bit 0).
#include "bitpack/bitpack.h"

namespace onebit {

void pack_rows_portable(const float* x, int64_t rows, int64_t C, uint64_t* out) {
  const int64_t KW = (C + 63) / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    uint64_t* o = out + r * KW;
    for (int64_t k = 0; k < KW; ++k) {
      uint64_t w = 0;
      const int64_t c0 = k * 64;
      const int64_t n = (C - c0) < 64 ? (C - c0) : 64;
      for (int64_t j = 0; j < n; ++j) w |= static_cast<uint64_t>(xr[c0 + j] < 0.0f) << j;
      o[k] = w;
    }
  }
}

void unpack_rows_portable(const uint64_t* p, int64_t rows, int64_t C, float* out) {
  const int64_t KW = (C + 63) / 64;
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* pr = p + r * KW;
    float* o = out + r * C;
    for (int64_t c = 0; c < C; ++c) o[c] = ((pr[c >> 6] >> (c & 63)) & 1) ? -1.0f : 1.0f;
  }
}

}  // namespace onebit
