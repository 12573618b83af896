// onebit/csrc/fgemm/fconv_bf16.cpp — the bf16x3 float conv (see fgemm.h): the input is split
// once into two padded bf16 buffers (hi, lo), then per block of 32 output pixels the patches of
// both halves are gathered into thread-local A blocks, multiplied (AMX-BF16, AVX512_BF16 or the
// portable twin) and transformed into the output like fconv2d_f32. With a pooling fused, bands of
// output rows are computed into a thread-local buffer and pooled from there (fgemm.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/clones.h"
#include "common/copy_small.h"
#include "common/isa.h"
#include "common/thread_pool.h"
#include "elementwise/pool.h"
#include "fgemm/bf16.h"
#include "fgemm/fgemm.h"

namespace onebit {

void prepare_bf16x3_halves(const float* w, FloatWeights* W) {
  W->Kb = (W->K + 31) / 32 * 32;
  const size_t size = static_cast<size_t>(W->Kb) * W->Np;
  W->hi.assign(size, 0);
  W->lo.assign(size, 0);
  for (int n = 0; n < W->N; ++n)
    for (int k = 0; k < W->K; ++k) {
      const size_t at = (static_cast<size_t>(k / 2) * W->Np + n) * 2 + (k % 2);
      split_bf16(w[static_cast<size_t>(n) * W->K + k], &W->hi[at], &W->lo[at]);
    }
}

namespace {

// hi[i], lo[i] = split_bf16(src[i]), compiled per CPU (the bit arithmetic vectorises)
ONEBIT_CLONES void split_bf16_row(const float* src, uint16_t* hi, uint16_t* lo, int64_t n) {
  for (int64_t i = 0; i < n; ++i) split_bf16(src[i], hi + i, lo + i);
}

// hi[i] = bf16(src[i]) alone (the plain bf16 conv)
ONEBIT_CLONES void round_bf16_row(const float* src, uint16_t* hi, int64_t n) {
  for (int64_t i = 0; i < n; ++i) hi[i] = to_bf16(src[i]);
}

}  // namespace

void gather_patches_bf16(const PatchGather& g) {
  int64_t n = g.n, oy = g.oy, ox = g.ox;
  for (int r = 0; r < g.block_rows; ++r) {
    uint16_t* dh = g.ah + static_cast<int64_t>(r) * g.ld;
    uint16_t* dl = g.al ? g.al + static_cast<int64_t>(r) * g.ld : nullptr;
    if (r >= g.rows) {
      std::memset(dh, 0, sizeof(uint16_t) * g.ld);
      if (dl) std::memset(dl, 0, sizeof(uint16_t) * g.ld);
      continue;
    }
    const size_t at = ((n * g.HP + oy * g.sh) * g.WP + ox * g.sw) * static_cast<size_t>(g.C);
    for (int ky = 0; ky < g.kh; ++ky) {
      const size_t src = at + static_cast<size_t>(ky) * g.WP * g.C;
      copy_small(dh + ky * g.row_elems, g.xh + src, sizeof(uint16_t) * g.row_elems);
      if (dl) copy_small(dl + ky * g.row_elems, g.xl + src, sizeof(uint16_t) * g.row_elems);
    }
    if (++ox == g.OW) {  // the next output pixel
      ox = 0;
      if (++oy == g.OH) oy = 0, ++n;
    }
  }
}

bool amx_bf16_usable() {
#ifdef ONEBIT_HAVE_AMX_BF16
  // (the AMX translation unit also gathers with AVX-512BW: every AMX CPU has it)
  static const bool ok = cpu_features().amx_bf16 && cpu_features().avx512bw && cpu_features().os_avx512 &&
                         amx_tile_permission();
  return ok;
#else
  return false;  // the compiler could not build the AMX-BF16 path
#endif
}

bool avx512_bf16_usable() {
#ifdef ONEBIT_HAVE_AVX512_BF16
  static const bool ok = cpu_features().avx512bf16 && cpu_features().avx512f && cpu_features().avx512bw &&
                         cpu_features().os_avx512;
  return ok;
#else
  return false;  // the compiler could not build the AVX512_BF16 path
#endif
}

void fgemm_bf16x3_block_ref(const uint16_t* Ah, const uint16_t* Al, const FloatWeights& W, float* acc) {
  for (int r = 0; r < 32; ++r) {
    const uint16_t* ah = Ah + static_cast<int64_t>(r) * W.Kb;
    const uint16_t* al = Al ? Al + static_cast<int64_t>(r) * W.Kb : nullptr;
    float* c = acc + static_cast<int64_t>(r) * W.Np;
    for (int n = 0; n < W.Np; ++n) {
      float s = 0.0f;
      for (int k = 0; k < W.Kb; ++k) {
        const size_t at = (static_cast<size_t>(k / 2) * W.Np + n) * 2 + (k % 2);
        const float xh = from_bf16(ah[k]), wh = from_bf16(W.hi[at]);
        s = s + xh * wh;  // every product of two bf16 values is exact in float
        if (al) {
          const float xl = from_bf16(al[k]), wl = from_bf16(W.lo[at]);
          s = s + xh * wl;
          s = s + xl * wh;
        }
      }
      c[n] = s;
    }
  }
}

void fconv2d_bf16x3(const float* x, const IConvGeom& g, const FloatWeights& W, const float* scale,
                    const float* bias, const float* residual, bool relu, float* out, Bf16Path path, int threads,
                    bool one_term, const PoolGeom* pool, bool pool_max) {
  const bool use_amx = path == Bf16Path::Amx;
  const int OH = g.OH(), OW = g.OW(), HP = g.H + 2 * g.ph, WP = g.W + 2 * g.pw, C = g.C;
  const int64_t K = static_cast<int64_t>(g.kh) * g.kw * C;
  // 1. split into two zero-padded bf16 buffers (the caller's thread keeps them between calls;
  //    the workers below only read them through the pointers)
  thread_local std::vector<uint16_t> hi_buffer, lo_buffer;
  const size_t total = static_cast<size_t>(g.N) * HP * WP * C;
  if (g.ph || g.pw) {
    hi_buffer.assign(total, 0);
    if (!one_term) lo_buffer.assign(total, 0);  // (the plain bf16 conv reads the hi halves alone)
  } else {
    hi_buffer.resize(total);
    if (!one_term) lo_buffer.resize(total);
  }
  uint16_t* const xh = hi_buffer.data();
  uint16_t* const xl = lo_buffer.data();
  const int64_t in_rows = static_cast<int64_t>(g.N) * g.H;
  parallel_for(resolve_threads(threads, in_rows), in_rows, [&](int64_t r) {
    const int64_t n = r / g.H, y = r % g.H;
    const size_t at = ((n * HP + y + g.ph) * WP + g.pw) * static_cast<size_t>(C);
    if (one_term)
      round_bf16_row(x + r * g.W * C, xh + at, static_cast<int64_t>(g.W) * C);
    else
      split_bf16_row(x + r * g.W * C, xh + at, xl + at, static_cast<int64_t>(g.W) * C);
  });
  // 2. blocks of 32 output pixels, each gathered, multiplied and transformed by the calling thread
  constexpr int BM = 32;
  const int64_t M = static_cast<int64_t>(g.N) * OH * OW;
  const int64_t row_elems = static_cast<int64_t>(g.kw) * C;
  struct Scratch {
    std::vector<uint16_t> ah, al;
    std::vector<float> acc;
    int64_t zeroed_for = -1;  // the K padding (K..Kb) of every row stays 0 while K is the same
  };
  auto scratch = [&]() -> Scratch& {
    thread_local Scratch sc;
    if (sc.zeroed_for != K * 4096 + W.Kb) {
      sc.ah.assign(static_cast<size_t>(BM) * W.Kb, 0);
      sc.al.assign(static_cast<size_t>(BM) * W.Kb, 0);
      sc.zeroed_for = K * 4096 + W.Kb;
    }
    sc.acc.resize(static_cast<size_t>(BM) * W.Np);
    return sc;
  };
  // output pixels [m0, m0 + rows) → dst (rows x W.N floats); res: their residual rows or null
  auto block = [&](Scratch& sc, int64_t m0, int rows, float* dst, const float* res) {
    // the patches of the block's output pixels (the kw taps of one kernel row are contiguous in
    // NHWC); rows past M are zero, since AMX loads whole 16-row tiles
    const int64_t p0 = m0 % (OH * OW), n0 = m0 / (OH * OW);
    uint16_t* const lo_block = one_term ? nullptr : sc.al.data();
    PatchGather pgather{xh, xl, sc.ah.data(), lo_block, W.Kb, rows, BM, n0, p0 / OW, p0 % OW, OH, OW, HP, WP, C,
                        g.sh, g.sw, g.kh, row_elems};
#ifdef ONEBIT_HAVE_AMX_BF16
    if (use_amx) {
      gather_patches_bf16_avx512(pgather);
      fgemm_bf16x3_block_amx(sc.ah.data(), lo_block, W, sc.acc.data());
    } else
#endif
#ifdef ONEBIT_HAVE_AVX512_BF16
    if (path == Bf16Path::Avx512Bf16) {
      gather_patches_bf16_avx512(pgather);
      fgemm_bf16x3_block_avx512bf16(sc.ah.data(), lo_block, W, rows, sc.acc.data());
    } else
#endif
    {
      gather_patches_bf16(pgather);
      fgemm_bf16x3_block_ref(sc.ah.data(), lo_block, W, sc.acc.data());
    }
    float_epilogue(sc.acc.data(), W.Np, rows, W.N, scale, bias, res, relu, dst);
  };
  auto tiles_begin = [&]() {
#ifdef ONEBIT_HAVE_AMX_BF16
    if (use_amx) amx_tiles_begin();
#endif
  };
  auto tiles_end = [&]() {
#ifdef ONEBIT_HAVE_AMX_BF16
    if (use_amx) amx_tiles_end();
#endif
  };
  if (pool == nullptr) {
    // a task is up to kGroup blocks (one tile configuration per task), fewer when that would leave
    // threads idle (a 1x1 conv on a 7x7 or 14x14 map): about two tasks per thread at least, claimed
    // dynamically, so uneven tasks even out
    const int64_t blocks = (M + BM - 1) / BM;
    const int64_t kGroup = std::clamp<int64_t>(blocks / (2 * std::max(1, resolve_threads(threads, blocks))), 1, 8);
    const int64_t tasks = (blocks + kGroup - 1) / kGroup;
    parallel_for(resolve_threads(threads, tasks), tasks, [&](int64_t t) {
      Scratch& sc = scratch();
      tiles_begin();
      const int64_t b_end = std::min(blocks, (t + 1) * kGroup);
      for (int64_t b = t * kGroup; b < b_end; ++b) {
        const int64_t m0 = b * BM;
        block(sc, m0, static_cast<int>(std::min<int64_t>(BM, M - m0)), out + m0 * W.N,
              residual ? residual + m0 * W.N : nullptr);
      }
      tiles_end();
    });
    return;
  }
  // 3. (with a max/avg pool fused) a task is a band of pooled rows of one image: it computes the conv
  //    rows their windows read (a band's first row again where two bands' windows overlap) into a
  //    thread-local buffer, then pools them into `out` — the conv's full map is never written out
  const PoolGeom& pgeom = *pool;  // the caller checked pgeom.H == OH, pgeom.W == OW, pgeom.C == W.N
  if (g.N == 0) return;           // an empty batch: nothing to pool (and no band to size per image)
  const int POH = pgeom.OH;
  const int bands = std::clamp((2 * std::max(1, resolve_threads(threads, int64_t(g.N) * POH)) + g.N - 1) / g.N, 1, POH);
  const int band_rows = (POH + bands - 1) / bands;
  const int per_image = (POH + band_rows - 1) / band_rows;
  const int64_t tasks = static_cast<int64_t>(g.N) * per_image;
  parallel_for(resolve_threads(threads, tasks), tasks, [&](int64_t t) {
    const int64_t n = t / per_image;
    const int py0 = static_cast<int>(t % per_image) * band_rows, py1 = std::min(POH, py0 + band_rows);
    const int cy0 = std::max(py0 * pgeom.sh - pgeom.ph, 0);
    const int cy1 = std::min((py1 - 1) * pgeom.sh - pgeom.ph + pgeom.kh, OH);
    thread_local std::vector<float> band;
    band.resize(static_cast<size_t>(cy1 - cy0) * OW * W.N);
    Scratch& sc = scratch();
    tiles_begin();
    const int64_t m_begin = (n * OH + cy0) * OW, m_end = (n * OH + cy1) * OW;
    for (int64_t m0 = m_begin; m0 < m_end; m0 += BM)
      block(sc, m0, static_cast<int>(std::min<int64_t>(BM, m_end - m0)), band.data() + (m0 - m_begin) * W.N, nullptr);
    tiles_end();
    PoolGeom one = pgeom;
    one.N = 1;
    one.H = cy1;  // windows clip at cy1: the map's end for the last band, past every window of the others
    pool_rows_f32(band.data(), one, pool_max, out + n * POH * pgeom.OW * W.N, py0, py1, cy0);
  });
}

}  // namespace onebit
