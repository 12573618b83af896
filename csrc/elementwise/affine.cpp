// onebit/csrc/elementwise/affine.cpp — see affine.h. Portable C++ (built without FMA flags, so
// the compiler cannot contract the multiply and the add); rows split across the thread pool.
#include "elementwise/affine.h"

#include <algorithm>

#include "common/thread_pool.h"

namespace onebit {

void channel_affine_inplace(float* y, int64_t rows, int64_t C, const float* mult, const float* bias, bool relu,
                            int threads) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 256));
  parallel_for(resolve_threads(threads, chunks), chunks, [&](int64_t c) {
    int64_t b, e;
    split_range(rows, chunks, c, &b, &e);
    for (int64_t r = b; r < e; ++r) {
      float* v = y + r * C;
      for (int64_t i = 0; i < C; ++i) {
        float t = v[i];
        if (mult) t = t * mult[i];
        if (bias) t = t + bias[i];
        if (relu) t = std::max(t, 0.0f);
        v[i] = t;
      }
    }
  });
}

}  // namespace onebit
