// onebit/csrc/common/isa.h
// Instruction-set paths of the onebit C++ core and the run-time dispatch state.
//
//   Portable : plain C++ (scalar __builtin_popcountll), the reference twin of every kernel.
//   Avx2     : 256-bit vectors, popcount via the vpshufb nibble lookup (Mula) + vpsadbw.
//   Avx512   : 512-bit vectors, AVX-512F/BW/VL/DQ + VPOPCNTDQ (vpopcntq).
//
// The active path is the best one the CPU (and OS, via XCR0) supports, unless forced
// with set_isa(). ISA-specific translation units are compiled with per-file -m flags and
// are only ever called after this check, so the module loads on any x86-64 CPU.
#pragma once
#include <string>
#include <vector>

namespace onebit {

enum class Isa : int { Portable = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool popcnt = false, fma = false, avx2 = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512dq = false, avx512vpopcntdq = false, avx512vnni = false, amx = false,
       amx_bf16 = false, amx_int8 = false,  // amx: the tile architecture (AMX-TILE)
       avx512bf16 = false;                 // AVX512_BF16: VDPBF16PS on zmm (Cooper Lake, Zen 4)
  bool os_avx = false, os_avx512 = false;
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* out);
bool isa_available(Isa isa);
std::vector<Isa> available_isas();  // best last
Isa best_isa();
Isa current_isa();                   // forced path or best_isa()
void set_current_isa(Isa isa);       // caller checked isa_available()

}  // namespace onebit
