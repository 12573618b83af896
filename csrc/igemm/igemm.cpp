// onebit/csrc/igemm/igemm.cpp — weight preparation, AMX permission, threading, epilogue.
#include "igemm/igemm.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "common/isa.h"
#include "common/thread_pool.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(_M_X64))
#include <sys/syscall.h>
#include <unistd.h>
#define ONEBIT_LINUX_X86 1
#endif

namespace onebit {

Int8Weights prepare_int8_weights(const int8_t* w, int N, int K) {
  Int8Weights p;
  p.N = N;
  p.K = K;
  p.Kp = (K + 63) / 64 * 64;
  p.Np = (N + 31) / 32 * 32;
  p.plain.assign(static_cast<size_t>(N) * p.Kp, 0);
  p.vnni.assign(static_cast<size_t>(p.Kp) * p.Np, 0);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int8_t v = w[static_cast<size_t>(n) * K + k];
      p.plain[static_cast<size_t>(n) * p.Kp + k] = v;
      p.vnni[(static_cast<size_t>(k / 4) * p.Np + n) * 4 + (k % 4)] = v;
    }
  return p;
}

bool amx_tile_permission() {
  static const bool ok = [] {
    if (!cpu_features().amx) return false;
#ifdef ONEBIT_LINUX_X86
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

bool amx_int8_usable() {
#ifndef ONEBIT_HAVE_AMX
  return false;  // the compiler could not build the AMX path
#else
  return cpu_features().amx_int8 && amx_tile_permission();
#endif
}

void igemm_s8(const int8_t* A, int64_t M, int64_t lda, const Int8Weights& W, const float* scale,
              const float* bias, float* C, int64_t ldc, bool use_amx, int threads, bool a_unsigned) {
  constexpr int BM = 32;
  const int64_t blocks = (M + BM - 1) / BM;
  const int nthreads = resolve_threads(threads, blocks);
  parallel_for(nthreads, blocks, [&](int64_t b) {
    const int64_t m0 = b * BM;
    const int rows = static_cast<int>(std::min<int64_t>(BM, M - m0));
    thread_local std::vector<int32_t> acc;
    thread_local std::vector<int8_t> pad;
    acc.resize(static_cast<size_t>(BM) * W.Np);
    const int8_t* a = A + m0 * lda;
    int64_t la = lda;
    if (use_amx && rows < BM) {  // AMX loads whole 16-row tiles: copy the last rows, zero padded
      pad.assign(static_cast<size_t>(BM) * W.Kp, 0);
      for (int r = 0; r < rows; ++r) std::memcpy(&pad[static_cast<size_t>(r) * W.Kp], a + r * lda, W.Kp);
      a = pad.data();
      la = W.Kp;
    }
#ifdef ONEBIT_HAVE_AMX
    if (use_amx)
      igemm_block_amx(a, rows, la, W, acc.data(), a_unsigned);
    else
#endif
      igemm_block_ref(a, rows, la, W, acc.data(), a_unsigned);
    for (int r = 0; r < rows; ++r) {
      float* c = C + (m0 + r) * ldc;
      const int32_t* s = &acc[static_cast<size_t>(r) * W.Np];
      for (int n = 0; n < W.N; ++n) {
        const float v = static_cast<float>(s[n]) * (scale ? scale[n] : 1.0f);
        c[n] = v + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

}  // namespace onebit
