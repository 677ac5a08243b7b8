"""Seed streams: one rule for deriving independent random streams from a user's seed.

Every stream is named by a path under the seed — ``("train", "noise")``, ``("fid", batch_index)`` — and its seed
is drawn by :class:`numpy.random.SeedSequence` from the seed and the path (strings enter as their CRC-32), so
streams are independent of each other and of how many were derived before them. Seeds are 63-bit: they fit
``torch.Generator.manual_seed`` and the Philox key of the fused ops (``[0, 2^63)``).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, *path: int | str) -> int:
    """The seed of the stream ``path`` under ``seed`` (an integer in [0, 2^63))."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    words = [seed] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in path]
    if any(w < 0 for w in words):
        raise ValueError(f"path: stream names must be strings or non-negative integers, got {path!r}")
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def make_generator(seed: int, *path: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` (``seed`` itself when no path)."""
    g = torch.Generator(device=device)
    return g.manual_seed(derive_seed(seed, *path) if path else seed)
