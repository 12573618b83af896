// onebit/csrc/bconv/bconv.cpp
// Driver of the binary convolution / GEMM (generic code, equations in bconv.h / tile.h):
//  1. weight re-layout + per-tap sums S (ConvWeights, paid once at prepare time);
//  2. border padding of the packed input with the +1 / -1 word (zero padding uses +1 and a
//     correction), skipped when padding is 0;
//  3. per-position base table: base = K, minus sum of S over the padded taps (pad_value 0);
//  4. split of the (channel block, output pixel) work into ~8 chunks per thread, handed out
//     through an atomic counter; each chunk is a contiguous block-major pixel range, so a
//     thread keeps one 32-channel weight block hot in L1. Results never depend on threads.
#include "bconv/bconv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <utility>

#include "common/isa.h"
#include "common/thread_pool.h"

namespace onebit {
namespace {

inline uint64_t word_mask(int c, int k) {  // valid channel bits of word k for c channels
  const int n = c - 64 * k;
  return n >= 64 ? ~0ULL : ((1ULL << n) - 1);
}

using TileFn = void (*)(const TileJob&, int, int64_t, int64_t);
constexpr int64_t kChunksPerThread = 8;

void tile_fn(TileFn* fn, int* ptile) {
  switch (current_isa()) {
#ifdef ONEBIT_HAVE_X86_KERNELS
    case Isa::Avx512: *fn = tile_run_avx512; *ptile = kTilePixelsAvx512; return;
    case Isa::Avx2: *fn = tile_run_avx2; *ptile = kTilePixelsAvx2; return;
#endif
    default: *fn = tile_run_portable; *ptile = kTilePixelsPortable; return;
  }
}

// Classes of output positions along one axis with equal valid-tap windows [lo, hi).
struct AxisClasses {
  std::vector<std::pair<int, int>> windows;  // class -> [lo, hi)
  std::vector<int32_t> cls;                  // position -> class
};

AxisClasses axis_classes(int out, int in, int k, int s, int p, bool zero_pad) {
  AxisClasses a;
  a.cls.resize(out);
  std::map<std::pair<int, int>, int> ids;
  for (int o = 0; o < out; ++o) {
    std::pair<int, int> win(0, k);
    if (zero_pad) {
      const int start = o * s - p;  // input coordinate of tap 0
      win.first = std::max(0, -start);
      win.second = std::min(k, in - start);
      if (win.second < win.first) win.second = win.first;  // fully in the padding
    }
    auto it = ids.find(win);
    if (it == ids.end()) {
      it = ids.emplace(win, static_cast<int>(a.windows.size())).first;
      a.windows.push_back(win);
    }
    a.cls[o] = it->second;
  }
  return a;
}

}  // namespace

ConvWeights::ConvWeights(const uint64_t* packed, int cout_, int kh_, int kw_, int cin_)
    : cout(cout_), cin(cin_), kh(kh_), kw(kw_) {
  kwin = (cin + 63) / 64;
  nblk = (cout + kBlock - 1) / kBlock;
  cout_pad = nblk * kBlock;
  const int taps = kh * kw;
  const int64_t rows = static_cast<int64_t>(taps) * kwin;
  w.reset(static_cast<size_t>(nblk) * rows * kBlock);
  std::memset(w.data(), 0, w.size() * sizeof(uint64_t));
  tapsum.assign(static_cast<size_t>(cout) * taps, 0);
  for (int co = 0; co < cout; ++co) {
    uint64_t* wb = w.data() + static_cast<int64_t>(co / kBlock) * rows * kBlock + (co % kBlock);
    for (int tap = 0; tap < taps; ++tap) {
      int pc = 0;
      for (int k = 0; k < kwin; ++k) {
        const uint64_t v = packed[(static_cast<int64_t>(co) * taps + tap) * kwin + k] & word_mask(cin, k);
        wb[(static_cast<int64_t>(tap) * kwin + k) * kBlock] = v;
        pc += __builtin_popcountll(v);
      }
      tapsum[static_cast<size_t>(co) * taps + tap] = cin - 2 * pc;
    }
  }
}

void ConvWeights::unpack_to(uint64_t* packed) const {
  const int taps = kh * kw;
  const int64_t rows = static_cast<int64_t>(taps) * kwin;
  for (int co = 0; co < cout; ++co) {
    const uint64_t* wb = w.data() + static_cast<int64_t>(co / kBlock) * rows * kBlock + (co % kBlock);
    for (int64_t r = 0; r < rows; ++r) packed[co * rows + r] = wb[r * kBlock];
  }
}

Epilogue make_epilogue(const ConvWeights& W, int mode, const float* mult, const float* bias,
                       const int32_t* thresh, const uint8_t* flip) {
  Epilogue e;
  e.mode = mode;
  if (mode == kModeFloat) {
    e.mult.assign(W.cout_pad, 1.0f);
    e.bias.assign(W.cout_pad, 0.0f);
    for (int c = 0; c < W.cout; ++c) {
      if (mult) e.mult[c] = mult[c];
      if (bias) e.bias[c] = bias[c];
    }
  } else if (mode == kModeBits) {
    e.thresh.assign(W.cout_pad, 0);
    e.thresh_s.assign(W.cout_pad, 0);
    e.flip.assign(W.nblk, 0u);
    constexpr int64_t lim = (int64_t(1) << 30) + 1;  // |acc| <= K < 2^30: clamping is exact
    for (int c = 0; c < W.cout; ++c) {
      const int64_t th = thresh ? std::max(-lim, std::min<int64_t>(lim, thresh[c])) : 0;
      const bool f = flip && flip[c];
      e.thresh[c] = static_cast<int32_t>(th);
      e.thresh_s[c] = static_cast<int32_t>(f ? -th : th);
      if (f) e.flip[c / kBlock] |= 1u << (c % kBlock);
    }
  }
  return e;
}

void bconv_run(const ConvWeights& W, const ConvGeom& g, const Epilogue& e, const uint64_t* x,
               int64_t N, int H, int Wd, const float* residual, void* out, int threads) {
  const int OH = conv_out_size(H, W.kh, g.sh, g.ph);
  const int OW = conv_out_size(Wd, W.kw, g.sw, g.pw);
  const int64_t Q = N * OH * OW;
  if (Q <= 0 || W.cout <= 0) return;
  const int kwin = W.kwin;

  // ---- 2. padded input ----
  const int Hp = H + 2 * g.ph, Wp = Wd + 2 * g.pw;
  AlignedBuffer<uint64_t> padded;
  const uint64_t* xin = x;
  if (g.ph > 0 || g.pw > 0) {
    padded.reset(static_cast<size_t>(N) * Hp * Wp * kwin);
    uint64_t padword[1024];
    std::vector<uint64_t> padvec;
    uint64_t* pw = padword;
    if (kwin > 1024) {
      padvec.resize(kwin);
      pw = padvec.data();
    }
    for (int k = 0; k < kwin; ++k) pw[k] = (g.pad_value == -1) ? word_mask(W.cin, k) : 0ULL;
    uint64_t* dst = padded.data();
    const int64_t rowlen = static_cast<int64_t>(Wd) * kwin;
    auto fill = [&](int64_t npix) {  // npix pad pixels
      for (int64_t c = 0; c < npix; ++c)
        for (int k = 0; k < kwin; ++k) *dst++ = pw[k];
    };
    for (int64_t n = 0; n < N; ++n) {
      for (int r = 0; r < Hp; ++r) {
        const int ih = r - g.ph;
        if (ih < 0 || ih >= H) {
          fill(Wp);
          continue;
        }
        fill(g.pw);
        std::memcpy(dst, x + (n * H + ih) * rowlen, rowlen * sizeof(uint64_t));
        dst += rowlen;
        fill(g.pw);
      }
    }
    xin = padded.data();
  }

  // ---- 3. base table ----
  const bool zero_pad = (g.pad_value == 0) && (g.ph > 0 || g.pw > 0);
  const AxisClasses rc = axis_classes(OH, H, W.kh, g.sh, g.ph, zero_pad);
  const AxisClasses cc = axis_classes(OW, Wd, W.kw, g.sw, g.pw, zero_pad);
  const int nrc = static_cast<int>(rc.windows.size()), ncc = static_cast<int>(cc.windows.size());
  const int K = W.kh * W.kw * W.cin;
  const int taps = W.kh * W.kw;
  std::vector<int32_t> base(static_cast<size_t>(nrc) * ncc * W.cout_pad, 0);
  for (int a = 0; a < nrc; ++a) {
    for (int b = 0; b < ncc; ++b) {
      int32_t* bp = base.data() + (static_cast<size_t>(a) * ncc + b) * W.cout_pad;
      const auto [ilo, ihi] = rc.windows[a];
      const auto [jlo, jhi] = cc.windows[b];
      for (int co = 0; co < W.cout; ++co) {
        int32_t v = K;
        if (zero_pad) {
          const int32_t* S = W.tapsum.data() + static_cast<size_t>(co) * taps;
          for (int i = 0; i < W.kh; ++i)
            for (int j = 0; j < W.kw; ++j)
              if (i < ilo || i >= ihi || j < jlo || j >= jhi) v -= S[i * W.kw + j];
        }
        bp[co] = v;
      }
    }
  }
  std::vector<int32_t> row_off(OH), col_off(OW);
  for (int o = 0; o < OH; ++o) row_off[o] = rc.cls[o] * ncc * W.cout_pad;
  for (int o = 0; o < OW; ++o) col_off[o] = cc.cls[o] * W.cout_pad;

  // ---- job ----
  TileJob J;
  J.x = xin;
  J.x_img_stride = static_cast<int64_t>(Hp) * Wp * kwin;
  J.x_row_stride = static_cast<int64_t>(Wp) * kwin;
  J.kwin = kwin;
  J.kh = W.kh; J.kw = W.kw; J.sh = g.sh; J.sw = g.sw;
  J.OH = OH; J.OW = OW;
  J.w = W.w.data();
  J.w_blk_stride = static_cast<int64_t>(taps) * kwin * kBlock;
  J.cout = W.cout; J.cout_pad = W.cout_pad; J.nblk = W.nblk;
  J.mode = e.mode;
  J.base = base.data();
  J.row_off = row_off.data();
  J.col_off = col_off.data();
  J.mult = e.mult.empty() ? nullptr : e.mult.data();
  J.bias = e.bias.empty() ? nullptr : e.bias.data();
  J.residual = residual;
  J.thresh = e.thresh.empty() ? nullptr : e.thresh.data();
  J.thresh_s = e.thresh_s.empty() ? nullptr : e.thresh_s.data();
  J.flip = e.flip.empty() ? nullptr : e.flip.data();
  J.out = out;
  J.kwout = (W.cout + 63) / 64;

  TileFn fn;
  int ptile;
  tile_fn(&fn, &ptile);

  // ---- 4. work split: weight each block by its number of 8-channel vectors ----
  std::vector<int64_t> cum(W.nblk + 1, 0);  // cumulative work before block b
  for (int b = 0; b < W.nblk; ++b) {
    const int nv = (std::min(kBlock, W.cout - b * kBlock) + 7) / 8;
    cum[b + 1] = cum[b] + nv * Q;
  }
  const int64_t total = cum[W.nblk];
  const int64_t tiles = W.nblk * ((Q + ptile - 1) / ptile);
  const int T = resolve_threads(threads, tiles);
  // Chunk boundary c of C -> linear position blk*Q + q, q snapped to the tile size.
  auto boundary = [&](int64_t c, int64_t C) -> int64_t {
    if (c >= C) return static_cast<int64_t>(W.nblk) * Q;
    const int64_t off = total * c / C;
    int b = static_cast<int>(std::upper_bound(cum.begin(), cum.end(), off) - cum.begin()) - 1;
    b = std::min(b, W.nblk - 1);
    const int64_t nv = (cum[b + 1] - cum[b]) / Q;
    int64_t q = (off - cum[b]) / nv;
    q = std::min(Q, ((q + ptile / 2) / ptile) * ptile);
    return static_cast<int64_t>(b) * Q + q;
  };
  auto run_range = [&](int64_t s, int64_t end) {
    for (int64_t pos = s; pos < end;) {
      const int blk = static_cast<int>(pos / Q);
      const int64_t q0 = pos % Q;
      const int64_t q1 = std::min<int64_t>(Q, q0 + (end - pos));
      fn(J, blk, q0, q1);
      pos += q1 - q0;
    }
  };
  if (T == 1) {
    run_range(0, static_cast<int64_t>(W.nblk) * Q);
    return;
  }
  // Dynamic chunks (a shared counter) rather than one static range per thread: on a busy
  // machine a descheduled or late-waking worker then costs at most one chunk.
  const int64_t C = std::min<int64_t>(tiles, static_cast<int64_t>(T) * kChunksPerThread);
  std::atomic<int64_t> next{0};
  parallel_run(T, [&](int) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < C;
         c = next.fetch_add(1, std::memory_order_relaxed))
      run_range(boundary(c, C), boundary(c + 1, C));
  });
}

}  // namespace onebit
