// onebit/csrc/igemm/igemm_amx.cpp — AMX-INT8 path (compiled with -mamx-tile -mamx-int8; only
// called after amx_int8_usable()). A 32 x 32 output block is four 16x16 int32 tiles (tmm0-3);
// per 64 bytes of K it loads two A tiles (tmm4-5, 16 rows x 64 int8 or uint8) and two B tiles (tmm6-7,
// 16 rows of 16 columns x 4 int8 in the VNNI layout) and issues four TDPBSSD (s8 x s8 -> s32)
// or TDPBUSD (u8 x s8 -> s32).
#include <immintrin.h>

#include <cstring>

#include "igemm/igemm.h"

namespace onebit {

namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// The tile configuration is per-thread state that other libraries in the process (oneDNN in
// PyTorch, for one) also set and release, so it is loaded at every entry and released at exit.
// The 64-byte configuration lives in static memory: built on the stack, GCC may drop the stores
// to it as dead (it does not model LDTILECFG reading them) and the CPU faults on a bad config.
const TileConfig& tile_config() {
  static const TileConfig cfg = [] {
    TileConfig c;
    std::memset(&c, 0, sizeof(c));
    c.palette_id = 1;
    for (int t = 0; t < 8; ++t) {
      c.rows[t] = 16;
      c.colsb[t] = 64;
    }
    return c;
  }();
  return cfg;
}

void configure_tiles() { _tile_loadconfig(&tile_config()); }

}  // namespace

void amx_tiles_begin() { configure_tiles(); }
void amx_tiles_end() { _tile_release(); }

void igemm_block_amx(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned) {
  configure_tiles();
  igemm_block_amx_configured(A, rows, lda, W, acc, a_unsigned);
  _tile_release();
}

void igemm_block_amx_configured(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc,
                                bool a_unsigned) {
  const int64_t ldb = static_cast<int64_t>(W.Np) * 4;  // bytes per VNNI row (4 k-values x Np)
  const int64_t ldc = static_cast<int64_t>(W.Np) * 4;  // bytes per accumulator row
  // K is cut into chunks of kKC bytes so that the chunk of A (32 x kKC = 16 KiB) stays in L1
  // while every 32-column panel of B passes by; the accumulators go through `acc` between chunks.
  constexpr int kKC = 512;
  for (int kc0 = 0; kc0 < W.Kp; kc0 += kKC) {
    const int kc1 = kc0 + kKC < W.Kp ? kc0 + kKC : W.Kp;
    for (int n0 = 0; n0 < W.Np; n0 += 32) {
      int32_t* c = acc + n0;
      if (kc0 == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        _tile_loadd(0, c, ldc);
        _tile_loadd(1, c + 16, ldc);
        _tile_loadd(2, c + 16 * W.Np, ldc);
        _tile_loadd(3, c + 16 * W.Np + 16, ldc);
      }
      for (int k0 = kc0; k0 < kc1; k0 += 64) {
        _tile_loadd(4, A + k0, lda);
        _tile_loadd(5, A + 16 * lda + k0, lda);
        const int8_t* b = W.vnni.data() + static_cast<int64_t>(k0 / 4) * ldb + n0 * 4;
        _tile_loadd(6, b, ldb);
        _tile_loadd(7, b + 64, ldb);
        if (a_unsigned) {  // u8 x s8 (TDPBUSD): non-negative activations, 8 bits of range
          _tile_dpbusd(0, 4, 6);
          _tile_dpbusd(1, 4, 7);
          _tile_dpbusd(2, 5, 6);
          _tile_dpbusd(3, 5, 7);
        } else {           // s8 x s8 (TDPBSSD)
          _tile_dpbssd(0, 4, 6);
          _tile_dpbssd(1, 4, 7);
          _tile_dpbssd(2, 5, 6);
          _tile_dpbssd(3, 5, 7);
        }
      }
      _tile_stored(0, c, ldc);
      _tile_stored(1, c + 16, ldc);
      _tile_stored(2, c + 16 * W.Np, ldc);
      _tile_stored(3, c + 16 * W.Np + 16, ldc);
    }
  }
  (void)rows;
}

}  // namespace onebit
