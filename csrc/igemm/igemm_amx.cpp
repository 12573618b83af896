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
void configure_tiles() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

}  // namespace

void igemm_block_amx(const int8_t* A, int rows, int64_t lda, const Int8Weights& W, int32_t* acc, bool a_unsigned) {
  configure_tiles();
  const int64_t ldb = static_cast<int64_t>(W.Np) * 4;  // bytes per VNNI row (4 k-values x Np)
  const int64_t ldc = static_cast<int64_t>(W.Np) * 4;  // bytes per accumulator row
  for (int n0 = 0; n0 < W.Np; n0 += 32) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k0 = 0; k0 < W.Kp; k0 += 64) {
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
    _tile_stored(0, acc + n0, ldc);
    _tile_stored(1, acc + n0 + 16, ldc);
    _tile_stored(2, acc + 16 * W.Np + n0, ldc);
    _tile_stored(3, acc + 16 * W.Np + n0 + 16, ldc);
  }
  _tile_release();
  (void)rows;
}

}  // namespace onebit
