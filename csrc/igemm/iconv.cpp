// onebit/csrc/igemm/iconv.cpp — the fused int8 convolution of binary-weight layers (see igemm.h):
// one quantisation pass over the padded input, then im2col of 32 output pixels at a time into a
// thread-local A tile that stays in L1/L2, the GEMM block (AMX or portable), and the epilogue.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/copy_small.h"
#include "common/thread_pool.h"
#include "igemm/igemm.h"

namespace onebit {

namespace {

// Rounding: adding and subtracting 1.5 * 2^23 rounds a float of magnitude <= 255 (after the
// clamp) to the nearest integer, ties to even, in the default rounding mode — NumPy's np.rint.
// Branch-free (min/max, then a truncating convert of an integral value) so the loop vectorises.
// A NaN input ends at lo (the engine refuses NaN inputs before any layer runs).
template <class T>
inline void quantize_typed(const float* x, int64_t n, float inv, float lo, float hi, T* q) {
  constexpr float kMagic = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::min(hi, std::max(lo, x[i] * inv));
    q[i] = static_cast<T>(static_cast<int>((v + kMagic) - kMagic));
  }
}

inline void quantize_span(const float* x, int64_t n, float inv, float lo, float hi, int8_t* q, bool a_unsigned) {
  if (a_unsigned)
    quantize_typed(x, n, inv, lo, hi, reinterpret_cast<uint8_t*>(q));
  else
    quantize_typed(x, n, inv, lo, hi, q);
}

// y = fl(fl(float(acc) * scale) + bias) (+ residual) (max 0), row by row; the flags are
// branched on once per row so the inner loops are plain and vectorise.
void epilogue(const int32_t* acc, int ld_acc, int rows, int N, const float* scale, const float* bias,
              const float* residual, bool relu, float* out) {
  for (int r = 0; r < rows; ++r) {
    const int32_t* s = acc + static_cast<int64_t>(r) * ld_acc;
    float* o = out + static_cast<int64_t>(r) * N;
    if (scale)
      for (int c = 0; c < N; ++c) o[c] = static_cast<float>(s[c]) * scale[c];
    else
      for (int c = 0; c < N; ++c) o[c] = static_cast<float>(s[c]);
    if (bias)
      for (int c = 0; c < N; ++c) o[c] = o[c] + bias[c];
    if (residual) {
      const float* res = residual + static_cast<int64_t>(r) * N;
      for (int c = 0; c < N; ++c) o[c] = o[c] + res[c];
    }
    if (relu)
      for (int c = 0; c < N; ++c) o[c] = std::max(o[c], 0.0f);
  }
}

}  // namespace

void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, float inv_scale, bool a_unsigned, int8_t* q,
                      int64_t ldq, int threads) {
  const float lo = a_unsigned ? 0.0f : -127.0f, hi = a_unsigned ? 255.0f : 127.0f;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 64));
  parallel_for(resolve_threads(threads, chunks), chunks, [&](int64_t c) {
    int64_t b, e;
    split_range(rows, chunks, c, &b, &e);
    for (int64_t r = b; r < e; ++r) {
      quantize_span(x + r * cols, cols, inv_scale, lo, hi, q + r * ldq, a_unsigned);
      if (ldq > cols) std::memset(q + r * ldq + cols, 0, static_cast<size_t>(ldq - cols));
    }
  });
}

void iconv2d_s8(const float* x, const IConvGeom& g, float inv_scale, bool a_unsigned, const Int8Weights& W,
                const float* scale, const float* bias, const float* residual, bool relu, float* out,
                bool use_amx, int threads) {
  const int OH = g.OH(), OW = g.OW(), HP = g.H + 2 * g.ph, WP = g.W + 2 * g.pw, C = g.C;
  const int64_t K = static_cast<int64_t>(g.kh) * g.kw * C;
  // 1. quantise into the zero-padded buffer (q = 0 is the zero padding of the real input)
  // the caller's buffer, kept between calls (workers only read it); only the border is zeroed
  // (a thread_local named inside the lambdas below would be each worker's own: use the pointer)
  thread_local std::vector<int8_t> xq_buffer;
  xq_buffer.resize(static_cast<size_t>(g.N) * HP * WP * C);
  int8_t* const xq = xq_buffer.data();
  const size_t pix = static_cast<size_t>(C);
  for (int64_t n = 0; n < g.N; ++n)
    for (int y = 0; y < HP; ++y) {
      int8_t* row = xq + (static_cast<size_t>(n) * HP + y) * WP * pix;
      if (y < g.ph || y >= g.ph + g.H) {
        std::memset(row, 0, WP * pix);
      } else if (g.pw) {
        std::memset(row, 0, g.pw * pix);
        std::memset(row + (g.pw + g.W) * pix, 0, g.pw * pix);
      }
    }
  const float lo = a_unsigned ? 0.0f : -127.0f, hi = a_unsigned ? 255.0f : 127.0f;
  const int64_t in_rows = static_cast<int64_t>(g.N) * g.H;
  parallel_for(resolve_threads(threads, in_rows), in_rows, [&](int64_t r) {
    const int64_t n = r / g.H, y = r % g.H;
    quantize_span(x + r * g.W * C, static_cast<int64_t>(g.W) * C, inv_scale, lo, hi,
                  xq + ((n * HP + y + g.ph) * WP + g.pw) * C, a_unsigned);
  });
  // 2. blocks of BM output pixels: gather, multiply, transform; a task is kGroup blocks so the
  //    AMX tile configuration is loaded once per task
  constexpr int BM = 32, kGroup = 8;
  const int64_t M = static_cast<int64_t>(g.N) * OH * OW;
  const int64_t blocks = (M + BM - 1) / BM;
  const int64_t tasks = (blocks + kGroup - 1) / kGroup;
  const int64_t row_bytes = static_cast<int64_t>(g.kw) * C;
  parallel_for(resolve_threads(threads, tasks), tasks, [&](int64_t t) {
    thread_local std::vector<int8_t> a;
    thread_local std::vector<int32_t> acc;
    a.resize(static_cast<size_t>(BM) * W.Kp);
    acc.resize(static_cast<size_t>(BM) * W.Np);
#ifdef ONEBIT_HAVE_AMX
    if (use_amx) amx_tiles_begin();
#endif
    const int64_t b_end = std::min(blocks, (t + 1) * kGroup);
    for (int64_t b = t * kGroup; b < b_end; ++b) {
      const int64_t m0 = b * BM;
      const int rows = static_cast<int>(std::min<int64_t>(BM, M - m0));
      for (int r = 0; r < BM; ++r) {  // K padding of every row, and the rows past M (AMX loads 16-row tiles)
        int8_t* dst = a.data() + static_cast<int64_t>(r) * W.Kp;
        if (r >= rows) {
          std::memset(dst, 0, W.Kp);
          continue;
        }
        if (W.Kp > K) std::memset(dst + K, 0, W.Kp - K);
        const int64_t m = m0 + r, n = m / (OH * OW), p = m % (OH * OW), oy = p / OW, ox = p % OW;
        const int8_t* src = xq + ((n * HP + oy * g.sh) * WP + ox * g.sw) * C;
        for (int ky = 0; ky < g.kh; ++ky)  // the kw taps of one kernel row are contiguous in NHWC
          copy_small(dst + ky * row_bytes, src + static_cast<int64_t>(ky) * WP * C, static_cast<size_t>(row_bytes));
      }
#ifdef ONEBIT_HAVE_AMX
      if (use_amx)
        igemm_block_amx_configured(a.data(), rows, W.Kp, W, acc.data(), a_unsigned);
      else
#endif
        igemm_block_ref(a.data(), rows, W.Kp, W, acc.data(), a_unsigned);
      epilogue(acc.data(), W.Np, rows, W.N, scale, bias, residual ? residual + m0 * W.N : nullptr, relu,
               out + m0 * W.N);
    }
#ifdef ONEBIT_HAVE_AMX
    if (use_amx) amx_tiles_end();
#endif
  });
}

}  // namespace onebit
