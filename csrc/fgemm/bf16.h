// onebit/csrc/fgemm/bf16.h — bfloat16 conversion (round to nearest even) and the split of a
// float into two bf16 halves, used by the bf16x3 float conv (fgemm.h).
#pragma once
#include <cstdint>
#include <cstring>

namespace onebit {

struct FloatWeights;

// Nearest bf16 (ties to even). Finite inputs only (the engine refuses NaN; a value past the bf16
// range rounds to infinity as the hardware conversion does).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// hi = bf16(v), lo = bf16(v - hi): v - (hi + lo) is within ~2^-16 |v|
inline void split_bf16(float v, uint16_t* hi, uint16_t* lo) {
  *hi = to_bf16(v);
  *lo = to_bf16(v - from_bf16(*hi));
}

// Fill W->Kb, W->hi, W->lo from the N x K row-major weights w (AMX-BF16 B layout, zero padded).
void prepare_bf16x3_halves(const float* w, FloatWeights* W);

}  // namespace onebit
