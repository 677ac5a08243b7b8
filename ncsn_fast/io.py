"""Files written so that a crash never leaves a torn one: :func:`atomic_write` (checkpoints, statistics, JSON)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# Called between the fsync of the temporary file and its rename; tests set it (a fixture) to widen that window.
_before_replace: Callable[[], None] | None = None


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a temp file in the same folder, fsync, rename onto ``path``, fsync the folder.

    A crash at any moment leaves either the previous file or the complete new one, never a torn file; an exception
    in ``write`` removes the temp file and leaves ``path`` as it was. The file gets the permissions ``open`` would
    give it (0666 minus the umask), not mkstemp's 0600.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _before_replace is not None:
            _before_replace()
        os.replace(tmp, p)
        dir_fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``payload`` as indented, key-sorted JSON, written atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True).encode()
    return atomic_write(path, lambda f: f.write(text))


class TensorFile:
    """A float32 tensor (N, *shape) filled batch by batch in a memory-mapped temporary file beside ``path`` and
    saved as a ``torch.save`` file at :meth:`close` — memory stays bounded by the page cache, whatever N is. The
    temporary file is removed however it ends; ``path`` appears only complete."""

    def __init__(self, path: str | os.PathLike, n: int, shape: tuple[int, ...]) -> None:
        import torch

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._raw = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".raw", dir=self.path.parent)
        os.close(fd)
        count = n
        for s in shape:
            count *= s
        self.tensor = torch.from_file(self._raw, shared=True, size=count, dtype=torch.float32).view(n, *shape)
        self.filled = 0

    def write(self, batch: Any) -> None:
        end = self.filled + len(batch)
        self.tensor[self.filled : end].copy_(batch.detach().to("cpu", dtype=self.tensor.dtype))
        self.filled = end

    def close(self) -> Path:
        import torch

        try:
            full = self.filled == len(self.tensor)  # a slice would save the whole storage
            data = self.tensor if full else self.tensor[: self.filled].clone()
            atomic_write(self.path, lambda f: torch.save(data, f))
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        self.tensor = None
        if os.path.exists(self._raw):
            os.unlink(self._raw)
