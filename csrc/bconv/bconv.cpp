// onebit/csrc/bconv/bconv.cpp
// Driver of the binary convolution / GEMM (generic code, equations in bconv.h / tile.h):
//  1. weight re-layout + per-tap sums S (ConvWeights, paid once at prepare time);
//  2. border padding of the packed input with the +1 / -1 word (zero padding uses +1 and a
//     correction), skipped when padding is 0;
//  3. per-input-size tables (cached by a plan): base = K minus the sum of S over the padded
//     taps (pad_value 0) per position class, the BITS popcount thresholds sth, and the
//     per-pixel input offsets / class offsets used by the tile kernels;
//  4. the work, (channel-block group) x (range of pixel tiles), is cut into ~8 chunks per
//     thread that threads claim dynamically; inside a chunk the kernel loops block-outer,
//     pixel-tile-inner, so one 32-channel weight block stays hot in L1. Results never
//     depend on the number of threads.
#include "bconv/bconv.h"

#include <algorithm>
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

using TileFn = void (*)(const TileJob&, int, int, int64_t, int, int);
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
    e.flip.assign(W.nblk, 0u);
    e.fmask.assign(W.cout_pad, 0);
    constexpr int64_t lim = (int64_t(1) << 30) + 1;  // |acc| <= K < 2^30: clamping is exact
    for (int c = 0; c < W.cout; ++c) {
      const int64_t th = thresh ? std::max(-lim, std::min<int64_t>(lim, thresh[c])) : 0;
      const bool f = flip && flip[c];
      e.thresh[c] = static_cast<int32_t>(th);
      if (f) e.flip[c / kBlock] |= 1u << (c % kBlock);
      if (f) e.fmask[c] = -1;
    }
  }
  return e;
}

std::shared_ptr<const ConvTables> make_conv_tables(const ConvWeights& W, const ConvGeom& g,
                                                   const Epilogue& e, int H, int Wd) {
  auto t = std::make_shared<ConvTables>();
  t->H = H;
  t->W = Wd;
  t->OH = conv_out_size(H, W.kh, g.sh, g.ph);
  t->OW = conv_out_size(Wd, W.kw, g.sw, g.pw);
  t->Hp = H + 2 * g.ph;
  t->Wp = Wd + 2 * g.pw;
  const int OH = t->OH, OW = t->OW;
  const bool zero_pad = (g.pad_value == 0) && (g.ph > 0 || g.pw > 0);
  const AxisClasses rc = axis_classes(OH, H, W.kh, g.sh, g.ph, zero_pad);
  const AxisClasses cc = axis_classes(OW, Wd, W.kw, g.sw, g.pw, zero_pad);
  const int nrc = static_cast<int>(rc.windows.size()), ncc = static_cast<int>(cc.windows.size());
  const int K = W.kh * W.kw * W.cin;
  const int taps = W.kh * W.kw;
  t->base.assign(static_cast<size_t>(nrc) * ncc * W.cout_pad, 0);
  for (int a = 0; a < nrc; ++a) {
    for (int b = 0; b < ncc; ++b) {
      int32_t* bp = t->base.data() + (static_cast<size_t>(a) * ncc + b) * W.cout_pad;
      const auto [ilo, ihi] = rc.windows[a];
      const auto [jlo, jhi] = cc.windows[b];
      for (int co = 0; co < W.cout; ++co) {
        int32_t v = K;
        if (zero_pad) {  // remove the +1-padded taps: base = K - sum_{padded taps} S
          const int32_t* S = W.tapsum.data() + static_cast<size_t>(co) * taps;
          for (int i = 0; i < W.kh; ++i)
            for (int j = 0; j < W.kw; ++j)
              if (i < ilo || i >= ihi || j < jlo || j >= jhi) v -= S[i * W.kw + j];
        }
        bp[co] = v;
      }
    }
  }
  if (e.mode == kModeBits) {
    // Threshold on the popcount sum pc (acc = base - 2*pc), per position class:
    //   not flipped: +1 <=> acc >= th <=> pc <= floor((base - th) / 2) =: A; bit <=> pc > A
    //   flipped:     +1 <=> acc <= th <=> pc >= ceil((base - th) / 2) =: B; bit <=> pc < B
    //                <=> ~pc > ~B (two's complement NOT reverses the order), sth = ~B.
    // 0 <= pc < 2^31, so clamping A, B to [-2, 2^31 - 2] keeps every comparison exact.
    t->sth.assign(t->base.size(), 0);
    const int64_t lo = -2, hi = (int64_t(1) << 31) - 2;
    for (size_t k = 0; k < t->base.size(); ++k) {
      const int co = static_cast<int>(k % W.cout_pad);
      const int64_t d = static_cast<int64_t>(t->base[k]) - e.thresh[co];
      if (e.fmask[co]) {
        const int64_t B = std::max(lo, std::min(hi, d >= 0 ? (d + 1) / 2 : -((-d) / 2)));  // ceil(d/2)
        t->sth[k] = ~static_cast<int32_t>(B);
      } else {
        const int64_t A = std::max(lo, std::min(hi, d >= 0 ? d / 2 : -((-d + 1) / 2)));  // floor(d/2)
        t->sth[k] = static_cast<int32_t>(A);
      }
    }
  }
  t->pix_x.resize(static_cast<size_t>(OH) * OW);
  t->pix_base.resize(static_cast<size_t>(OH) * OW);
  for (int oh = 0; oh < OH; ++oh)
    for (int ow = 0; ow < OW; ++ow) {
      const size_t r = static_cast<size_t>(oh) * OW + ow;
      t->pix_x[r] = (static_cast<int64_t>(oh) * g.sh * t->Wp + static_cast<int64_t>(ow) * g.sw) * W.kwin;
      t->pix_base[r] = (rc.cls[oh] * ncc + cc.cls[ow]) * W.cout_pad;
    }
  return t;
}

void bconv_run(const ConvWeights& W, const ConvGeom& g, const Epilogue& e, const uint64_t* x,
               int64_t N, int H, int Wd, const float* residual, void* out, int threads,
               ConvTableCache* cache, uint64_t* sign_out) {
  std::shared_ptr<const ConvTables> tab;
  if (cache) {
    std::lock_guard<std::mutex> lk(cache->m);
    if (cache->last && cache->last->H == H && cache->last->W == Wd) tab = cache->last;
  }
  if (!tab) {
    tab = make_conv_tables(W, g, e, H, Wd);
    if (cache) {
      std::lock_guard<std::mutex> lk(cache->m);
      cache->last = tab;
    }
  }
  const int HW = tab->OH * tab->OW;
  if (N <= 0 || HW <= 0 || W.cout <= 0) return;
  const int kwin = W.kwin;
  const int Hp = tab->Hp, Wp = tab->Wp;

  // ---- padded input (skipped without padding) ----
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

  // ---- job ----
  TileJob J;
  J.x = xin;
  J.x_img_stride = static_cast<int64_t>(Hp) * Wp * kwin;
  J.x_row_stride = static_cast<int64_t>(Wp) * kwin;
  J.kwin = kwin;
  J.kh = W.kh;
  J.kw = W.kw;
  J.HW = HW;
  J.pix_x = tab->pix_x.data();
  J.pix_base = tab->pix_base.data();
  J.w = W.w.data();
  J.w_blk_stride = static_cast<int64_t>(W.kh) * W.kw * kwin * kBlock;
  J.cout = W.cout;
  J.cout_pad = W.cout_pad;
  J.nblk = W.nblk;
  J.mode = e.mode;
  J.base = tab->base.data();
  J.mult = e.mult.empty() ? nullptr : e.mult.data();
  J.bias = e.bias.empty() ? nullptr : e.bias.data();
  J.residual = residual;
  J.thresh = e.thresh.empty() ? nullptr : e.thresh.data();
  J.flip = e.flip.empty() ? nullptr : e.flip.data();
  J.sth = tab->sth.empty() ? nullptr : tab->sth.data();
  J.fmask = e.fmask.empty() ? nullptr : e.fmask.data();
  J.out = out;
  J.kwout = (W.cout + 63) / 64;
  J.sign_out = e.mode == kModeFloat ? sign_out : nullptr;

  TileFn fn;
  int P;
  tile_fn(&fn, &P);

  // ---- work split ----
  // Work = (channel-block group) x (range of pixel tiles); tiles never span images.
  const int64_t tpi = (HW + P - 1) / P;  // tiles per image
  const int64_t ntiles = N * tpi;
  const int T = resolve_threads(threads, ntiles * W.nblk);
  auto run_tiles = [&](int blk0, int blk1, int64_t ta, int64_t tb) {
    while (ta < tb) {
      const int64_t n = ta / tpi;
      const int64_t te = std::min(tb, (n + 1) * tpi);
      const int r0 = static_cast<int>((ta - n * tpi) * P);
      const int r1 = static_cast<int>(std::min<int64_t>(HW, (te - n * tpi) * P));
      fn(J, blk0, blk1, n, r0, r1);
      ta = te;
    }
  };
  if (T == 1) {
    run_tiles(0, W.nblk, 0, ntiles);
    return;
  }
  // ~kChunksPerThread chunks per thread, claimed dynamically (a late or descheduled worker
  // then costs at most the chunk it is computing). Split channel blocks only when there
  // are too few pixel tiles (small maps, dense layers at small batch).
  const int64_t want = static_cast<int64_t>(T) * kChunksPerThread;
  const int G = static_cast<int>(std::min<int64_t>(W.nblk, std::max<int64_t>(1, (want + ntiles - 1) / ntiles)));
  const int64_t Cp = std::max<int64_t>(1, std::min<int64_t>(ntiles, want / G));
  const int64_t C = G * Cp;
  parallel_for(T, C, [&](int64_t c) {
    const int64_t gi = c / Cp, pi = c % Cp;
    const int blk0 = static_cast<int>(W.nblk * gi / G), blk1 = static_cast<int>(W.nblk * (gi + 1) / G);
    run_tiles(blk0, blk1, ntiles * pi / Cp, ntiles * (pi + 1) / Cp);
  });
}

}  // namespace onebit
