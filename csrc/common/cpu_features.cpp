// onebit/csrc/common/cpu_features.cpp
// Run-time CPU feature detection (cpuid + xgetbv) and the global ISA selection used by
// every kernel dispatcher. Generic code (no ISA flags).
#include "common/isa.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define ONEBIT_X86_DETECT 1
#endif

namespace onebit {
namespace {

#ifdef ONEBIT_X86_DETECT
unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef ONEBIT_X86_DETECT
  unsigned int a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.popcnt = (c >> 23) & 1;
  f.fma = (c >> 12) & 1;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  if (osxsave) {
    const unsigned long long xcr0 = read_xcr0();
    f.os_avx = avx && ((xcr0 & 0x6) == 0x6);                 // XMM + YMM state
    f.os_avx512 = f.os_avx && ((xcr0 & 0xE0) == 0xE0);       // opmask + ZMM_Hi256 + Hi16_ZMM
  }
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512vnni = (c >> 11) & 1;
    f.avx512vpopcntdq = (c >> 14) & 1;
    f.amx = (d >> 24) & 1;
    f.amx_bf16 = (d >> 22) & 1;
    f.amx_int8 = (d >> 25) & 1;
    if (a >= 1) {  // leaf 7 sub-leaf 1: EAX bit 5 = AVX512_BF16
      unsigned a1, b1, c1, d1;
      __cpuid_count(7, 1, a1, b1, c1, d1);
      f.avx512bf16 = (a1 >> 5) & 1;
    }
  }
#endif
  return f;
}

std::atomic<int> g_forced{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool isa_from_name(const std::string& name, Isa* out) {
  for (Isa i : {Isa::Portable, Isa::Avx2, Isa::Avx512}) {
    if (name == isa_name(i)) { *out = i; return true; }
  }
  return false;
}

bool isa_available(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Portable: return true;
#ifdef ONEBIT_HAVE_X86_KERNELS
    case Isa::Avx2: return f.os_avx && f.avx2 && f.popcnt;
    case Isa::Avx512:
      return f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq &&
             f.avx512vpopcntdq && f.popcnt;
#endif
    default: return false;
  }
  (void)f;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Portable, Isa::Avx2, Isa::Avx512})
    if (isa_available(i)) v.push_back(i);
  return v;
}

Isa best_isa() { return available_isas().back(); }

Isa current_isa() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<Isa>(forced);
  static const Isa best = best_isa();
  return best;
}

void set_current_isa(Isa isa) { g_forced.store(static_cast<int>(isa), std::memory_order_relaxed); }

}  // namespace onebit
