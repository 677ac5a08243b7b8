// The channels-last launch shape (csrc/cuda/launch_config.h) without a GPU: every (n, tile, chunk) is one block,
// chunks cover H·W exactly with none empty, N past 65535 fits (gridDim.x), small N is split, and a grid past
// 2^31 - 1 blocks is refused. Plain C++ (no torch): ctest, and tests/ops/test_cuda_launch_config.py via c++.
#include "../../csrc/cuda/launch_config.h"

#include <cstdio>
#include <vector>

using namespace ncsn_fast;

static int failures = 0;
#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

static void check_cover(int64_t N, int64_t C, int64_t HW, int64_t target) {
  const NhwcLaunch l = nhwc_launch(N, C, HW, target);
  EXPECT(fits_grid_x(l));
  EXPECT(l.tiles * 32 >= C && (l.tiles - 1) * 32 < C);
  EXPECT(l.rows % kNhwcBlockRows == 0 && l.rows > 0);
  EXPECT(l.chunks * l.rows >= HW && (l.chunks - 1) * l.rows < HW);  // covered, last chunk non-empty
  EXPECT(l.blocks == N * l.tiles * l.chunks);
  if (N * l.tiles * l.chunks > 4096) return;  // the exhaustive map check on small grids only
  std::vector<int> seen(static_cast<size_t>(N * l.tiles * l.chunks), 0);
  for (int64_t b = 0; b < l.blocks; ++b) {
    const NhwcBlock k = nhwc_block(b, l.tiles, l.chunks);
    EXPECT(k.n >= 0 && k.n < N && k.tile >= 0 && k.tile < l.tiles && k.chunk >= 0 && k.chunk < l.chunks);
    ++seen[static_cast<size_t>((k.n * l.tiles + k.tile) * l.chunks + k.chunk)];
  }
  for (int s : seen) EXPECT(s == 1);
}

int main() {
  for (int64_t N : {1, 2, 3, 8, 129})
    for (int64_t C : {2, 31, 32, 33, 128})
      for (int64_t HW : {1, 7, 64, 65, 1024, 4096 + 3})
        for (int64_t target : {1, 1056}) check_cover(N, C, HW, target);
  // small N: H·W split over blocks; large N: one chunk
  EXPECT(nhwc_launch(1, 128, 64 * 64, 1056).chunks > 1);
  EXPECT(nhwc_launch(1, 128, 64 * 64, 1056).blocks >= 64);
  EXPECT(nhwc_launch(512, 128, 64 * 64, 1056).chunks == 1);
  // N past gridDim.y's 65535 fits on gridDim.x
  EXPECT(fits_grid_x(nhwc_launch(70000, 64, 32 * 32, 1056)));
  EXPECT(nhwc_launch(70000, 64, 32 * 32, 1056).blocks == 70000 * 2);
  // a grid past 2^31 - 1 blocks is refused (the caller's TORCH_CHECK)
  EXPECT(!fits_grid_x(nhwc_launch(int64_t(1) << 26, 32 * 64, 1, 1)));
  std::printf("%s\n", failures ? "launch config: FAILED" : "launch config: ok");
  return failures ? 1 : 0;
}
