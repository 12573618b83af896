// onebit/csrc/elementwise/pool.cpp — see pool.h. One task per output row (n, oy); channels are
// the inner, contiguous loop. pool_row is the portable path (vectorised by the compiler per CPU);
// the AVX-512 path (pool_avx512.cpp) gives the same bits, 5× faster on the ResNet stem's pool.
#include "elementwise/pool.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "common/clones.h"
#include "common/isa.h"
#include "common/thread_pool.h"

namespace onebit {

namespace {

// One output row (n, oy) of the pooling (vectorised over the channels, per CPU by ONEBIT_CLONES).
ONEBIT_CLONES void pool_row(const float* x, const PoolGeom& g, bool is_max, float* out, int64_t n, int oy,
                            double* sum, int row0 = 0) {
  const int y0 = std::max(oy * g.sh - g.ph, 0), y1 = std::min(oy * g.sh - g.ph + g.kh, g.H);
  for (int ox = 0; ox < g.OW; ++ox) {
    const int x0 = std::max(ox * g.sw - g.pw, 0), x1 = std::min(ox * g.sw - g.pw + g.kw, g.W);
    float* o = out + ((n * g.OH + oy) * g.OW + ox) * g.C;
    if (is_max) {
      std::fill(o, o + g.C, -std::numeric_limits<float>::infinity());
      for (int y = y0; y < y1; ++y)
        for (int xx = x0; xx < x1; ++xx) {
          const float* v = x + ((n * g.H + y - row0) * g.W + xx) * g.C;
          for (int c = 0; c < g.C; ++c) o[c] = std::max(o[c], v[c]);
        }
    } else {
      std::fill(sum, sum + g.C, 0.0);
      for (int y = y0; y < y1; ++y)
        for (int xx = x0; xx < x1; ++xx) {
          const float* v = x + ((n * g.H + y - row0) * g.W + xx) * g.C;
          for (int c = 0; c < g.C; ++c) sum[c] += v[c];
        }
      const double cnt = static_cast<double>((y1 - y0) * (x1 - x0));
      for (int c = 0; c < g.C; ++c) o[c] = static_cast<float>(sum[c] / cnt);
    }
  }
}

// Output rows [oy0, oy1) of image n on the calling thread: the AVX-512 rows where the kernels
// dispatch to AVX-512, else the portable twin (same bits).
void pool_rows(const float* x, const PoolGeom& g, bool is_max, float* out, int64_t n, int oy0, int oy1, int row0) {
#ifdef ONEBIT_HAVE_X86_KERNELS
  if (current_isa() == Isa::Avx512) {
    for (int oy = oy0; oy < oy1; ++oy) pool_row_avx512(x, g, is_max, out, n, oy, row0);
    return;
  }
#endif
  thread_local std::vector<double> sum;
  if (!is_max) sum.resize(g.C);
  for (int oy = oy0; oy < oy1; ++oy) pool_row(x, g, is_max, out, n, oy, sum.data(), row0);
}

}  // namespace

void pool2d_f32(const float* x, const PoolGeom& g, bool is_max, float* out, int threads) {
  const int64_t rows = static_cast<int64_t>(g.N) * g.OH;
  parallel_for(resolve_threads(threads, rows), rows, [&](int64_t t) {
    const int oy = static_cast<int>(t % g.OH);
    pool_rows(x, g, is_max, out, t / g.OH, oy, oy + 1, 0);
  });
}

void pool_rows_f32(const float* x, const PoolGeom& g, bool is_max, float* out, int oy0, int oy1, int row0) {
  pool_rows(x, g, is_max, out, 0, oy0, oy1, row0);
}

}  // namespace onebit
