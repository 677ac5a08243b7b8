// Launch shape of the channels-last plane reductions of csrc/cuda/instance_norm_pp_elu.cu, host code only (no CUDA
// or torch headers: tests/cpp/test_launch_config.cpp checks it with a plain C++ compiler).
//
// A block (32, 8) covers 32 channels x one chunk of rows of one sample. Blocks are numbered on gridDim.x alone
// (limit 2^31 - 1; gridDim.y and .z stop at 65535, which put a cap on N when N had its own grid dimension). With
// few samples, N * ceil(C / 32) blocks leave most of the GPU idle, so H·W is split into `chunks` row ranges whose
// partial results a second kernel combines (Chan et al.'s pairwise mean/variance merge for the statistics).
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__CUDACC__)
#define NCSN_LAUNCH_HD __host__ __device__ __forceinline__
#else
#define NCSN_LAUNCH_HD inline
#endif

namespace ncsn_fast {

constexpr int64_t kMaxGridX = 2147483647;  // gridDim.x limit (compute capability >= 3.0)
constexpr int64_t kNhwcBlockRows = 8;      // blockDim.y of the channels-last reductions
constexpr int64_t kMinChunkRows = 64;      // rows a chunk keeps at least (8 per thread row): no near-empty blocks

struct NhwcLaunch {
  int64_t tiles;   // ceil(C / 32): channel tiles per sample
  int64_t chunks;  // row ranges per (sample, tile); every one non-empty
  int64_t rows;    // rows per chunk, a multiple of kNhwcBlockRows (the last chunk may be shorter)
  int64_t blocks;  // N * tiles * chunks, all on gridDim.x
};

// target_blocks: how many blocks keep the GPU busy (a few per SM). Split only when N * tiles falls short of it.
inline NhwcLaunch nhwc_launch(int64_t N, int64_t C, int64_t HW, int64_t target_blocks) {
  NhwcLaunch l{};
  l.tiles = (C + 31) / 32;
  const int64_t base = N * l.tiles;
  const int64_t want = base >= target_blocks ? 1 : (target_blocks + base - 1) / base;
  const int64_t chunks = std::max<int64_t>(1, std::min(want, HW / kMinChunkRows));
  l.rows = ((HW + chunks - 1) / chunks + kNhwcBlockRows - 1) / kNhwcBlockRows * kNhwcBlockRows;
  l.chunks = (HW + l.rows - 1) / l.rows;  // rounding rows up may leave fewer chunks; none is empty
  l.blocks = base * l.chunks;
  return l;
}

inline bool fits_grid_x(const NhwcLaunch& l) { return l.blocks >= 1 && l.blocks <= kMaxGridX; }

// Block b of the grid -> (sample n, channel tile, chunk); chunk fastest, then tile, then n.
struct NhwcBlock {
  int64_t n, tile, chunk;
};
NCSN_LAUNCH_HD NhwcBlock nhwc_block(int64_t b, int64_t tiles, int64_t chunks) {
  return {b / (tiles * chunks), (b / chunks) % tiles, b % chunks};
}

}  // namespace ncsn_fast
