// onebit/csrc/fgemm/fconv.cpp — weight packing and the float conv driver (see fgemm.h): a padded
// copy of the input, then per task of kBM output pixels the patches are gathered into a
// thread-local A block, multiplied, and transformed into the output.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/clones.h"
#include "common/copy_small.h"
#include "common/isa.h"
#include "common/thread_pool.h"
#include "fgemm/bf16.h"
#include "fgemm/fgemm.h"

namespace onebit {

FloatWeights prepare_float_weights(const float* w, int N, int K, bool bf16x3) {
  FloatWeights p;
  p.N = N;
  p.K = K;
  p.Np = (N + 31) / 32 * 32;
  p.packed.assign(static_cast<size_t>(K) * p.Np, 0.0f);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) p.packed[static_cast<size_t>(k) * p.Np + n] = w[static_cast<size_t>(n) * K + k];
  if (bf16x3) prepare_bf16x3_halves(w, &p);
  return p;
}

void fconv2d_f32(const float* x, const IConvGeom& g, const FloatWeights& W, const float* scale, const float* bias,
                 const float* residual, bool relu, float* out, FloatPath path, int threads) {
  const int OH = g.OH(), OW = g.OW(), C = g.C;
  const bool padded = g.ph || g.pw;
  const int HP = g.H + 2 * g.ph, WP = g.W + 2 * g.pw;
  const int64_t K = static_cast<int64_t>(g.kh) * g.kw * C;
  // zero-padded copy of the input (the caller's thread keeps the buffer between calls)
  thread_local std::vector<float> xp_buffer;
  const float* xs = x;
  if (padded) {
    xp_buffer.assign(static_cast<size_t>(g.N) * HP * WP * C, 0.0f);
    for (int64_t n = 0; n < g.N; ++n)
      for (int y = 0; y < g.H; ++y)
        std::memcpy(xp_buffer.data() + ((n * HP + y + g.ph) * WP + g.pw) * C, x + (n * g.H + y) * g.W * C,
                    sizeof(float) * g.W * C);
    xs = xp_buffer.data();
  }
  constexpr int kBM = 64;  // a multiple of the 8-row micro-tile
  const int64_t M = static_cast<int64_t>(g.N) * OH * OW;
  if (M == 0) return;  // an empty batch
  const int64_t row_blocks = (M + kBM - 1) / kBM;
  // fewer row blocks than threads (a dense layer at batch 1-64): split the columns too, in whole
  // 32-column panels, so every thread streams its own part of the weights
  const int panels = W.Np / 32;
  const int nthreads = resolve_threads(threads, row_blocks * panels);
  const int col_parts = row_blocks >= nthreads ? 1 : std::min<int>(panels, (nthreads + row_blocks - 1) / row_blocks);
  const int64_t tasks = row_blocks * col_parts;
  const int64_t row_floats = static_cast<int64_t>(g.kw) * C;
  parallel_for(resolve_threads(threads, tasks), tasks, [&](int64_t task) {
    thread_local std::vector<float> a, acc;
    a.resize(static_cast<size_t>(kBM) * K);
    acc.resize(static_cast<size_t>(kBM) * W.Np);
    const int64_t t = task / col_parts;
    const int part = static_cast<int>(task % col_parts);
    const int p0 = static_cast<int>(static_cast<int64_t>(panels) * part / col_parts);
    const int p1 = static_cast<int>(static_cast<int64_t>(panels) * (part + 1) / col_parts);
    const int c0 = p0 * 32, c1 = std::min(p1 * 32, W.N);
    const int64_t m0 = t * kBM;
    const int rows = static_cast<int>(std::min<int64_t>(kBM, M - m0));
    const int64_t q0 = m0 % (OH * OW);
    // the AVX2 and AVX-512 products have a tile for any row count; the portable one gets whole 8-row groups
    const int block_rows = path != FloatPath::Portable ? rows : (rows + 7) / 8 * 8;
    const FloatPatchGather pg{xs, a.data(), K, rows, block_rows, m0 / (OH * OW), q0 / OW, q0 % OW, OH, OW, HP, WP,
                              C, g.sh, g.sw, g.kh, row_floats};
#ifdef ONEBIT_HAVE_X86_KERNELS
    if (path == FloatPath::Avx512) {
      gather_patches_f32_avx512(pg);
      fgemm_block_avx512(a.data(), block_rows, W, acc.data(), p0 * 32, p1 * 32);
    } else if (path == FloatPath::Avx2) {
      gather_patches_f32(pg);
      fgemm_block_avx2(a.data(), block_rows, W, acc.data(), p0 * 32, p1 * 32);
    } else
#endif
    {
      gather_patches_f32(pg);
      fgemm_block_ref(a.data(), block_rows, W, acc.data(), p0 * 32, p1 * 32);
    }
    if (c0 < c1)
      float_epilogue(acc.data(), W.Np, rows, W.N, scale, bias, residual ? residual + m0 * W.N : nullptr, relu,
                     out + m0 * W.N, c0, c1);
  });
}

bool fgemm_avx2_usable() {
#ifdef ONEBIT_HAVE_X86_KERNELS
  const CpuFeatures& f = cpu_features();
  return f.os_avx && f.avx2 && f.fma;
#else
  return false;
#endif
}

bool fgemm_avx512_usable() {
#ifdef ONEBIT_HAVE_X86_KERNELS
  // the file is compiled with -mavx512f/bw/vl/dq (CMakeLists.txt): the compiler may use any of them
  const CpuFeatures& f = cpu_features();
  return f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
#else
  return false;
#endif
}

void gather_patches_f32(const FloatPatchGather& g) {
  int64_t n = g.n, oy = g.oy, ox = g.ox;
  for (int r = 0; r < g.block_rows; ++r) {
    float* dst = g.a + r * g.ld;
    if (r >= g.rows) {
      std::fill(dst, dst + g.ld, 0.0f);
      continue;
    }
    const float* src = g.x + ((n * g.HP + oy * g.sh) * g.WP + ox * g.sw) * g.C;
    for (int ky = 0; ky < g.kh; ++ky)
      copy_small(dst + ky * g.row_elems, src + static_cast<int64_t>(ky) * g.WP * g.C, sizeof(float) * g.row_elems);
    if (++ox == g.OW) {  // the next output pixel
      ox = 0;
      if (++oy == g.OH) oy = 0, ++n;
    }
  }
}

namespace {

// One output row in one pass: o = fl(fl(s·scale) + bias) (+ res), then max(o, 0) — the roundings
// of the step-by-step form (-ffp-contract=off: no FMA); the flags are template arguments so each
// variant is a plain loop the compiler vectorises (always_inline: inside each CPU's clone).
template <bool S, bool B, bool R, bool RELU>
__attribute__((always_inline)) inline void epilogue_row(const float* __restrict s, const float* __restrict scale,
                                                        const float* __restrict bias, const float* __restrict res,
                                                        float* __restrict o, int c0, int c1) {
  for (int c = c0; c < c1; ++c) {
    float v = s[c];
    if (S) v = v * scale[c];
    if (B) v = v + bias[c];
    if (R) v = v + res[c];
    if (RELU) v = std::max(v, 0.0f);
    o[c] = v;
  }
}

template <bool S, bool B, bool R>
__attribute__((always_inline)) inline void epilogue_rows(const float* acc, int ld, int rows, int N, const float* scale,
                                                         const float* bias, const float* residual, bool relu,
                                                         float* out, int c0, int c1) {
  for (int r = 0; r < rows; ++r) {
    const float* s = acc + static_cast<int64_t>(r) * ld;
    const float* res = R ? residual + static_cast<int64_t>(r) * N : nullptr;
    float* o = out + static_cast<int64_t>(r) * N;
    if (relu) epilogue_row<S, B, R, true>(s, scale, bias, res, o, c0, c1);
    else epilogue_row<S, B, R, false>(s, scale, bias, res, o, c0, c1);
  }
}

}  // namespace

ONEBIT_CLONES void float_epilogue(const float* acc, int ld, int rows, int N, const float* scale, const float* bias,
                                  const float* residual, bool relu, float* out, int c0, int c1) {
  if (c1 < 0) c1 = N;
  const int which = (scale ? 4 : 0) | (bias ? 2 : 0) | (residual ? 1 : 0);
  switch (which) {
    case 0: epilogue_rows<false, false, false>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 1: epilogue_rows<false, false, true>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 2: epilogue_rows<false, true, false>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 3: epilogue_rows<false, true, true>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 4: epilogue_rows<true, false, false>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 5: epilogue_rows<true, false, true>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    case 6: epilogue_rows<true, true, false>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
    default: epilogue_rows<true, true, true>(acc, ld, rows, N, scale, bias, residual, relu, out, c0, c1); break;
  }
}

}  // namespace onebit
