// onebit/csrc/bconv/bconv.h
// Binary 2-D convolution (and, as its 1x1 special case, the binary GEMM) on bit-packed
// NHWC activations. For +-1 tensors x (N,H,W,C_in) and w (C_out,C_in,kh,kw):
//
//   acc[n,oh,ow,co] = sum_{i,j,c} xpad[n, oh*sh+i, ow*sw+j, c] * w[co,c,i,j]
//                   = K - 2 * sum_{i,j,k} popcount(Xpad[.., k] XOR W[co,i,j,k]),  K = kh*kw*C_in
//
// Borders: pad_value +1 / -1 pad the input with that binary value (exact). pad_value 0 is
// exact zero padding: the kernel runs on a +1-padded input and the per-output-position
// correction  - sum_{taps (i,j) in the padding} S[co,i,j],  S[co,i,j] = sum_c w[co,c,i,j]
// = C_in - 2*popcount(W[co,i,j,:]), is folded into the per-position base table (LCE-style
// zero-padding correction; positions are grouped into classes of equal valid-tap windows).
// Output transforms (INT / FLOAT / BITS) are described in bgemm/tile.h.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "bgemm/tile.h"
#include "common/aligned.h"

namespace onebit {

// Weights re-laid out once ("prepare"): Wt[blk][(i*kw+j)*KWin + k][co%32], blocks of 32
// output channels, zero-filled past C_out; input tail bits masked to 0.
struct ConvWeights {
  int cout = 0, cin = 0, kh = 0, kw = 0, kwin = 0, nblk = 0, cout_pad = 0;
  AlignedBuffer<uint64_t> w;
  std::vector<int32_t> tapsum;  // [cout][kh*kw]: S[co, tap] = sum_c w[co,c,tap]

  // packed: (cout, kh, kw, kwin) uint64, bit=1 <=> -1.
  ConvWeights(const uint64_t* packed, int cout, int kh, int kw, int cin);
  // Inverse of the re-layout (for inspection/tests): (cout, kh, kw, kwin).
  void unpack_to(uint64_t* packed) const;
};

struct ConvGeom {
  int sh = 1, sw = 1, ph = 0, pw = 0;
  int pad_value = 1;  // +1, -1 or 0
};

struct Epilogue {
  int mode = kModeInt;
  std::vector<float> mult, bias;  // [cout_pad]  (FLOAT)
  std::vector<int32_t> thresh;    // [cout_pad]  (BITS), clamped to +-(2^30+1)
  std::vector<uint32_t> flip;     // [nblk]      (BITS)
  std::vector<int32_t> fmask;     // [cout_pad]  (BITS) -1 where flipped
};

// Largest K = kh*kw*C_in the kernels accept (accumulators and thresholds stay in int32).
constexpr int64_t kMaxK = (int64_t(1) << 30) - 1;

// Sets up the epilogue arrays (padded to cout_pad); null pointers mean defaults
// (mult 1, bias 0, flip 0). thresh is required for BITS (checked by the caller).
Epilogue make_epilogue(const ConvWeights& W, int mode, const float* mult, const float* bias,
                       const int32_t* thresh, const uint8_t* flip);

inline int conv_out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

// Per-input-size tables (depend on H, W, the geometry and the weights, not on the data).
struct ConvTables {
  int H = 0, W = 0, OH = 0, OW = 0, Hp = 0, Wp = 0;
  std::vector<int32_t> base;      // [row class * col classes][cout_pad]
  std::vector<int64_t> pix_x;     // [OH*OW] word offset of tap (0,0) in the padded image
  std::vector<int32_t> pix_base;  // [OH*OW] offset of the pixel's base row
  std::vector<int32_t> sth;       // BITS only: popcount thresholds, layout of base
};
std::shared_ptr<const ConvTables> make_conv_tables(const ConvWeights& W, const ConvGeom& g,
                                                   const Epilogue& e, int H, int Wd);

// A plan keeps the tables of the last input size it saw (thread-safe).
struct ConvTableCache {
  std::mutex m;
  std::shared_ptr<const ConvTables> last;
};

// x: (N, H, W, kwin) packed; out: (N, OH, OW, cout) int32/float32 or (N, OH, OW, kwout)
// uint64; residual: (N, OH, OW, cout) float32 or null (FLOAT only). cache may be null.
// sign_out (FLOAT only, may be null): (N, OH, OW, kwout) uint64, the packed signs of out
// (bit 1 <=> out < 0), i.e. pack_bits(out) without a pass of its own.
void bconv_run(const ConvWeights& W, const ConvGeom& g, const Epilogue& e, const uint64_t* x,
               int64_t N, int H, int Wd, const float* residual, void* out, int threads,
               ConvTableCache* cache = nullptr, uint64_t* sign_out = nullptr);

}  // namespace onebit
