// onebit/csrc/common/copy_small.h
// Copy of a short run of bytes (an im2col patch row: kw x C values, often 20–100 bytes) without
// a call to memcpy: 16-byte moves with an overlapping last move. The convolutions gather one
// such row per kernel row and output pixel, so the call overhead of memcpy dominated their
// gather (a 7x7/2 stem on 224x224 makes 88 000 of them).
#pragma once
#include <cstddef>
#include <cstring>

namespace onebit {

inline void copy_small(void* dst, const void* src, size_t bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (bytes >= 16) {
    size_t i = 0;
    for (; i + 16 <= bytes; i += 16) std::memcpy(d + i, s + i, 16);  // a constant size: one 16-byte move
    if (i < bytes) std::memcpy(d + bytes - 16, s + bytes - 16, 16);
  } else {
    for (size_t i = 0; i < bytes; ++i) d[i] = s[i];
  }
}

}  // namespace onebit
