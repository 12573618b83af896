// onebit GPU kernels: bit packing and XNOR-popcount GEMM on 32-bit words (BNN paper §3–4,
// methods.md §1.8), with the CPU engine's conventions and fused output transforms.
//
// Conventions (identical to csrc/ and onebit.kernels):
//   * packed bit = 1 for -1 (x < 0), 0 for +1 (x >= 0, also -0.0 and NaN); LSB first: element k
//     of a row is bit k % 32 of word k / 32. A uint64 word of a .onebit file is two of these
//     words (low half first), so files need no re-packing.
//   * operands are rows of KW words (KW a multiple of 8 here); bits past the real length K are 0
//     in both operands, so they never mismatch:  dot = K - 2 * popcount(a XOR b).
//   * acc = dot - corr[(m % corr_period) * N + n] when a correction table is given (exact zero
//     padding of a conv: computed with +1 padding, then the padded taps are taken out).
//   * output transforms per column n:  "int": acc;  "float": fl(fl(float(acc) * mult[n]) + bias[n])
//     (+ residual[m, n]), mul then add, each rounded (no FMA), like the CPU kernels;
//     "bits": +1 iff (flip[n] ? acc <= thresh[n] : acc >= thresh[n]), packed along n.
//
// Kernels:
//   pack_rows          one warp per output word (__ballot_sync).
//   bgemm_tiled<CSA>   128x128 block tile, 8x8 outputs per thread, 8 words (256 bits) per k step
//                      through shared memory with a register prefetch. CSA=true counts two XOR
//                      words with one carry-save adder (Harley–Seal): per output it keeps the
//                      running "ones" word and pops only the carries, halving the popcounts,
//                      which are the slowest instruction (16/clk/SM on sm_80/90 vs 64 for LOP3).
//                      On an H100 the plain variant already runs at ~93 % of the popcount peak
//                      and CSA does not beat it (the logic ops become the limit), so "auto" uses
//                      the plain one; CSA stays as an option for GPUs with slower popcount.
//   bgemm_smallm<8>    batch <= 64: a warp per output column, lanes along K (a GEMV; memory-bound).
//   bgemm_paper        the BNN paper's kernel: 16x16 shared-memory tiles, one __popc per word.
//   bgemm_naive        one thread per output: the reference twin of the others.
//   sgemm_baseline     the paper's "unoptimised" float kernel: 16x16 shared-memory tiles.

#include <cstdint>
#include <cuda_runtime.h>

namespace {

struct Epilogue {
  int mode;                 // 0 int, 1 float, 2 bits
  const float* mult;        // float mode, (N,) or null (1)
  const float* bias;        // float mode, (N,) or null (0)
  const float* residual;    // float mode, (M, N) row-major or null
  const int32_t* thresh;    // bits mode, (N,)
  const uint8_t* flip;      // bits mode, (N,) or null (all 0)
  const int32_t* corr;      // (corr_period, N) or null
  int corr_period;
  void* out;
  int out_stride;           // elements (int/float) or words (bits) per output row
};

__device__ __forceinline__ int corrected(const Epilogue& ep, int acc, int m, int n, int N) {
  if (ep.corr) acc -= ep.corr[(int64_t)(m % ep.corr_period) * N + n];
  return acc;
}

// int / float outputs of one element; returns the +-1 decision bit (1 = -1) for bits mode.
__device__ __forceinline__ void store_value(const Epilogue& ep, int acc, int m, int n, int N) {
  if (ep.mode == 0) {
    static_cast<int32_t*>(ep.out)[(int64_t)m * ep.out_stride + n] = acc;
  } else {
    float v = __fmul_rn(static_cast<float>(acc), ep.mult ? ep.mult[n] : 1.0f);
    v = __fadd_rn(v, ep.bias ? ep.bias[n] : 0.0f);
    if (ep.residual) v = __fadd_rn(v, ep.residual[(int64_t)m * N + n]);
    static_cast<float*>(ep.out)[(int64_t)m * ep.out_stride + n] = v;
  }
}

__device__ __forceinline__ uint8_t minus_bit(const Epilogue& ep, int acc, int n) {
  const bool plus = (ep.flip && ep.flip[n]) ? (acc <= ep.thresh[n]) : (acc >= ep.thresh[n]);
  return plus ? 0 : 1;
}

// 4 bytes holding 0/1 (little endian) -> 4 bits.
__device__ __forceinline__ uint32_t bytes_to_bits(uint32_t v) {
  return (v & 1u) | ((v >> 7) & 2u) | ((v >> 14) & 4u) | ((v >> 21) & 8u);
}

__global__ void pack_rows_kernel(const float* __restrict__ x, uint32_t* __restrict__ out, int64_t M,
                                 int K, int stride) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= M * stride) return;  // uniform per warp: blockDim is a multiple of 32
  const int64_t m = warp / stride;
  const int w = static_cast<int>(warp % stride);
  const int k = w * 32 + lane;
  const bool neg = k < K && x[m * K + k] < 0.0f;
  const unsigned bits = __ballot_sync(0xffffffffu, neg);
  if (lane == 0) out[warp] = bits;
}

template <bool CSA>
__global__ void __launch_bounds__(256) bgemm_tiled_kernel(const uint32_t* __restrict__ A,
                                                          const uint32_t* __restrict__ B, int M, int N,
                                                          int KW, int K, Epilogue ep) {
  constexpr int BM = 128, BN = 128, BK = 8, PAD = 4;
  __shared__ __align__(16) uint32_t As[BK][BM + PAD];
  __shared__ __align__(16) uint32_t Bs[BK][BN + PAD];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

  // global -> shared: each thread moves 4 words (one uint4) of A and of B per k step
  const int lrow = tid >> 1, lk = (tid & 1) * 4;
  const bool a_ok = m0 + lrow < M, b_ok = n0 + lrow < N;
  const uint4* Ap = reinterpret_cast<const uint4*>(A + static_cast<int64_t>(a_ok ? m0 + lrow : 0) * KW + lk);
  const uint4* Bp = reinterpret_cast<const uint4*>(B + static_cast<int64_t>(b_ok ? n0 + lrow : 0) * KW + lk);
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  uint4 ra = a_ok ? Ap[0] : zero;
  uint4 rb = b_ok ? Bp[0] : zero;

  uint32_t acc[8][8];
  uint32_t ones[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0u, ones[i][j] = 0u;

  for (int kt = 0; kt < KW; kt += BK) {
    As[lk + 0][lrow] = ra.x; As[lk + 1][lrow] = ra.y; As[lk + 2][lrow] = ra.z; As[lk + 3][lrow] = ra.w;
    Bs[lk + 0][lrow] = rb.x; Bs[lk + 1][lrow] = rb.y; Bs[lk + 2][lrow] = rb.z; Bs[lk + 3][lrow] = rb.w;
    __syncthreads();
    if (kt + BK < KW) {  // prefetch the next k step while this one is computed
      ra = a_ok ? Ap[(kt + BK) / 4] : zero;
      rb = b_ok ? Bp[(kt + BK) / 4] : zero;
    }
#pragma unroll
    for (int k = 0; k < BK; k += 2) {
      uint32_t a0[8], b0[8], a1[8], b1[8];
      *reinterpret_cast<uint4*>(&a0[0]) = *reinterpret_cast<const uint4*>(&As[k][ty * 4]);
      *reinterpret_cast<uint4*>(&a0[4]) = *reinterpret_cast<const uint4*>(&As[k][64 + ty * 4]);
      *reinterpret_cast<uint4*>(&b0[0]) = *reinterpret_cast<const uint4*>(&Bs[k][tx * 4]);
      *reinterpret_cast<uint4*>(&b0[4]) = *reinterpret_cast<const uint4*>(&Bs[k][64 + tx * 4]);
      *reinterpret_cast<uint4*>(&a1[0]) = *reinterpret_cast<const uint4*>(&As[k + 1][ty * 4]);
      *reinterpret_cast<uint4*>(&a1[4]) = *reinterpret_cast<const uint4*>(&As[k + 1][64 + ty * 4]);
      *reinterpret_cast<uint4*>(&b1[0]) = *reinterpret_cast<const uint4*>(&Bs[k + 1][tx * 4]);
      *reinterpret_cast<uint4*>(&b1[4]) = *reinterpret_cast<const uint4*>(&Bs[k + 1][64 + tx * 4]);
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const uint32_t x0 = a0[i] ^ b0[j], x1 = a1[i] ^ b1[j];
          if (CSA) {  // ones + x0 + x1 = 2 * carry + (ones ^ x0 ^ x1), bitwise
            const uint32_t o = ones[i][j];
            const uint32_t carry = (o & (x0 | x1)) | (x0 & x1);
            ones[i][j] = o ^ x0 ^ x1;
            acc[i][j] += __popc(carry);
          } else {
            acc[i][j] += __popc(x0) + __popc(x1);
          }
        }
    }
    __syncthreads();
  }

  __shared__ __align__(16) uint8_t sbits[BM][BN];  // bits mode: decisions, packed after a barrier
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = (i < 4) ? ty * 4 + i : 64 + ty * 4 + (i - 4);
    const int m = m0 + r;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int c = (j < 4) ? tx * 4 + j : 64 + tx * 4 + (j - 4);
      const int n = n0 + c;
      const int pop = CSA ? static_cast<int>(2u * acc[i][j] + __popc(ones[i][j])) : static_cast<int>(acc[i][j]);
      if (ep.mode == 2) {
        sbits[r][c] = (m < M && n < N) ? minus_bit(ep, corrected(ep, K - 2 * pop, m, n, N), n) : 0;
      } else if (m < M && n < N) {
        store_value(ep, corrected(ep, K - 2 * pop, m, n, N), m, n, N);
      }
    }
  }
  if (ep.mode == 2) {
    __syncthreads();
    const int nwords = (N + 31) / 32;
    for (int q = tid; q < BM * (BN / 32); q += 256) {
      const int r = q >> 2, wi = q & 3;
      const int m = m0 + r, word = n0 / 32 + wi;
      if (m >= M || word >= nwords) continue;
      const uint32_t* src = reinterpret_cast<const uint32_t*>(&sbits[r][wi * 32]);
      uint32_t bits = 0;
#pragma unroll
      for (int b = 0; b < 8; ++b) bits |= bytes_to_bits(src[b]) << (4 * b);
      static_cast<uint32_t*>(ep.out)[static_cast<int64_t>(m) * ep.out_stride + word] = bits;
    }
  }
}

template <int MT>
__global__ void __launch_bounds__(256) bgemm_smallm_kernel(const uint32_t* __restrict__ A,
                                                           const uint32_t* __restrict__ B, int M, int N,
                                                           int KW, int K, Epilogue ep) {
  __shared__ __align__(16) uint8_t sbits[MT][32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int m0 = blockIdx.y * MT;
  for (int jj = 0; jj < 4; ++jj) {
    const int nl = warp * 4 + jj, n = blockIdx.x * 32 + nl;
    int pc[MT];
#pragma unroll
    for (int i = 0; i < MT; ++i) pc[i] = 0;
    if (n < N) {
      const uint32_t* Bn = B + static_cast<int64_t>(n) * KW;
      for (int w = lane; w < KW; w += 32) {
        const uint32_t b = Bn[w];
#pragma unroll
        for (int i = 0; i < MT; ++i)
          if (m0 + i < M) pc[i] += __popc(A[static_cast<int64_t>(m0 + i) * KW + w] ^ b);
      }
    }
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) pc[i] += __shfl_xor_sync(0xffffffffu, pc[i], off);
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      if (lane != i) continue;
      const int m = m0 + i;
      const bool ok = m < M && n < N;
      if (ep.mode == 2) {
        sbits[i][nl] = ok ? minus_bit(ep, corrected(ep, K - 2 * pc[i], m, n, N), n) : 0;
      } else if (ok) {
        store_value(ep, corrected(ep, K - 2 * pc[i], m, n, N), m, n, N);
      }
    }
  }
  if (ep.mode == 2) {
    __syncthreads();
    const int t = threadIdx.x;
    if (t < MT && m0 + t < M) {
      const uint32_t* src = reinterpret_cast<const uint32_t*>(&sbits[t][0]);
      uint32_t bits = 0;
#pragma unroll
      for (int b = 0; b < 8; ++b) bits |= bytes_to_bits(src[b]) << (4 * b);
      static_cast<uint32_t*>(ep.out)[static_cast<int64_t>(m0 + t) * ep.out_stride + blockIdx.x] = bits;
    }
  }
}

__global__ void bgemm_paper_kernel(const uint32_t* __restrict__ A, const uint32_t* __restrict__ B, int M,
                                   int N, int KW, int K, int32_t* __restrict__ C) {
  __shared__ uint32_t As[16][17];
  __shared__ uint32_t Bs[16][17];  // transposed: Bs[k][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m = blockIdx.y * 16 + ty, n = blockIdx.x * 16 + tx, nrow = blockIdx.x * 16 + ty;
  int pc = 0;
  for (int kt = 0; kt < KW; kt += 16) {
    As[ty][tx] = (m < M && kt + tx < KW) ? A[static_cast<int64_t>(m) * KW + kt + tx] : 0u;
    Bs[tx][ty] = (nrow < N && kt + tx < KW) ? B[static_cast<int64_t>(nrow) * KW + kt + tx] : 0u;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; ++k) pc += __popc(As[ty][k] ^ Bs[k][tx]);
    __syncthreads();
  }
  if (m < M && n < N) C[static_cast<int64_t>(m) * N + n] = K - 2 * pc;
}

__global__ void bgemm_naive_kernel(const uint32_t* __restrict__ A, const uint32_t* __restrict__ B, int M,
                                   int N, int KW, int K, int32_t* __restrict__ C) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  int pc = 0;
  for (int w = 0; w < KW; ++w)
    pc += __popc(A[static_cast<int64_t>(m) * KW + w] ^ B[static_cast<int64_t>(n) * KW + w]);
  C[static_cast<int64_t>(m) * N + n] = K - 2 * pc;
}

// C = A W^T with A (M, K) and W (N, K) row-major float: the paper's baseline kernel.
__global__ void sgemm_baseline_kernel(const float* __restrict__ A, const float* __restrict__ W, int M, int N,
                                      int K, float* __restrict__ C) {
  __shared__ float As[16][17];
  __shared__ float Ws[16][17];  // transposed: Ws[k][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m = blockIdx.y * 16 + ty, n = blockIdx.x * 16 + tx, nrow = blockIdx.x * 16 + ty;
  float s = 0.0f;
  for (int kt = 0; kt < K; kt += 16) {
    As[ty][tx] = (m < M && kt + tx < K) ? A[static_cast<int64_t>(m) * K + kt + tx] : 0.0f;
    Ws[tx][ty] = (nrow < N && kt + tx < K) ? W[static_cast<int64_t>(nrow) * K + kt + tx] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; ++k) s += As[ty][k] * Ws[k][tx];
    __syncthreads();
  }
  if (m < M && n < N) C[static_cast<int64_t>(m) * N + n] = s;
}

}  // namespace

extern "C" {

int onebit_pack_rows(const float* x, uint32_t* out, long long M, int K, int stride, void* stream) {
  const long long threads = M * stride * 32;
  if (threads == 0) return 0;
  const int block = 256;
  const long long grid = (threads + block - 1) / block;
  pack_rows_kernel<<<static_cast<unsigned>(grid), block, 0, static_cast<cudaStream_t>(stream)>>>(x, out, M, K,
                                                                                                 stride);
  return static_cast<int>(cudaGetLastError());
}

// algo: 0 auto, 1 tiled+CSA, 2 tiled, 3 small-M, 4 paper (int only), 5 naive (int only)
int onebit_bgemm(int algo, const uint32_t* A, const uint32_t* B, int M, int N, int KW, int K, int mode,
                 const float* mult, const float* bias, const float* residual, const int32_t* thresh,
                 const uint8_t* flip, const int32_t* corr, int corr_period, void* out, int out_stride,
                 void* stream) {
  if (M <= 0 || N <= 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Epilogue ep{mode, mult, bias, residual, thresh, flip, corr, corr_period > 0 ? corr_period : 1, out, out_stride};
  if (algo == 0) algo = (M <= 64) ? 3 : 2;  // measured on an H100: see docs/benchmarks.md
  if (algo == 1 || algo == 2) {
    if (KW % 8 != 0) return -1;
    dim3 grid((N + 127) / 128, (M + 127) / 128);
    if (algo == 1)
      bgemm_tiled_kernel<true><<<grid, 256, 0, s>>>(A, B, M, N, KW, K, ep);
    else
      bgemm_tiled_kernel<false><<<grid, 256, 0, s>>>(A, B, M, N, KW, K, ep);
  } else if (algo == 3) {
    dim3 grid((N + 31) / 32, (M + 7) / 8);
    bgemm_smallm_kernel<8><<<grid, 256, 0, s>>>(A, B, M, N, KW, K, ep);
  } else if (algo == 4 || algo == 5) {
    if (mode != 0 || corr) return -2;
    if (algo == 4) {
      dim3 grid((N + 15) / 16, (M + 15) / 16);
      bgemm_paper_kernel<<<grid, dim3(16, 16), 0, s>>>(A, B, M, N, KW, K, static_cast<int32_t*>(out));
    } else {
      dim3 grid((N + 127) / 128, M);
      bgemm_naive_kernel<<<grid, 128, 0, s>>>(A, B, M, N, KW, K, static_cast<int32_t*>(out));
    }
  } else {
    return -3;
  }
  return static_cast<int>(cudaGetLastError());
}

int onebit_sgemm_baseline(const float* A, const float* W, int M, int N, int K, float* C, void* stream) {
  if (M <= 0 || N <= 0) return 0;
  dim3 grid((N + 15) / 16, (M + 15) / 16);
  sgemm_baseline_kernel<<<grid, dim3(16, 16), 0, static_cast<cudaStream_t>(stream)>>>(A, W, M, N, K, C);
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
