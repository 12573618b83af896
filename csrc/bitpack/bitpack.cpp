// onebit/csrc/bitpack/bitpack.cpp
// Driver of bit packing: picks the ISA path and splits rows into chunks over threads.
#include "bitpack/bitpack.h"

#include <algorithm>

#include "common/isa.h"
#include "common/thread_pool.h"

namespace onebit {
namespace {
using PackFn = void (*)(const float*, int64_t, int64_t, uint64_t*);
using UnpackFn = void (*)(const uint64_t*, int64_t, int64_t, float*);

PackFn pack_fn() {
  switch (current_isa()) {
#ifdef ONEBIT_HAVE_X86_KERNELS
    case Isa::Avx512: return pack_rows_avx512;
    case Isa::Avx2: return pack_rows_avx2;
#endif
    default: return pack_rows_portable;
  }
}
UnpackFn unpack_fn() {
  switch (current_isa()) {
#ifdef ONEBIT_HAVE_X86_KERNELS
    case Isa::Avx512: return unpack_rows_avx512;
    case Isa::Avx2: return unpack_rows_avx2;
#endif
    default: return unpack_rows_portable;
  }
}
// Below ~64K elements a second thread costs more than it saves.
constexpr int64_t kMinElemsPerThread = 1 << 16;
}  // namespace

void pack_bits(const float* x, int64_t rows, int64_t C, uint64_t* out, int threads) {
  const int64_t KW = (C + 63) / 64;
  PackFn fn = pack_fn();
  const int T = resolve_threads(threads, std::min(rows, (rows * C) / kMinElemsPerThread));
  if (T <= 1) return fn(x, rows, C, out);
  const int64_t nch = std::min<int64_t>(rows, 4 * T);
  parallel_for(T, nch, [&](int64_t c) {
    int64_t b, e;
    split_range(rows, nch, c, &b, &e);
    if (e > b) fn(x + b * C, e - b, C, out + b * KW);
  });
}

void unpack_bits(const uint64_t* p, int64_t rows, int64_t C, float* out, int threads) {
  const int64_t KW = (C + 63) / 64;
  UnpackFn fn = unpack_fn();
  const int T = resolve_threads(threads, std::min(rows, (rows * C) / kMinElemsPerThread));
  if (T <= 1) return fn(p, rows, C, out);
  const int64_t nch = std::min<int64_t>(rows, 4 * T);
  parallel_for(T, nch, [&](int64_t c) {
    int64_t b, e;
    split_range(rows, nch, c, &b, &e);
    if (e > b) fn(p + b * KW, e - b, C, out + b * C);
  });
}

}  // namespace onebit
