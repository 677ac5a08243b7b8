"""Files written so that a crash never leaves a torn one: :func:`atomic_write` (checkpoints, statistics, JSON),
and :class:`Staged`: the files of one run moved into place together, only when it succeeds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
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


@contextlib.contextmanager
def _sigint_deferred() -> Any:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done, then raise it; in the main
    thread only (elsewhere Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
    elif caught and previous == signal.SIG_DFL:
        raise KeyboardInterrupt


class Staged:
    """The files of one run, written under temporary names beside their targets and moved onto them together by
    :meth:`commit`, only when the run succeeds.

    A run that fails or is interrupted (:meth:`discard`, or the ``with`` block left by an exception) removes only
    what it created itself: its temporary files and the folders it made (when empty). A file it would have replaced
    stays byte-identical, and a file it never wrote is never touched. :meth:`commit` holds off a Ctrl-C until its
    renames are done (then raises it, with ``committed`` True)::

        with Staged() as stage:
            save_grid(images, stage.path(out / "samples.png"))     # any writer that takes a path
            save_pretrained(model, stage.folder(out), cfg)        # or fills a folder
        # leaving the block: committed; an exception: discarded and re-raised
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary file, target)
        self._folders: list[tuple[Path, Path]] = []  # (temporary folder, target folder)
        self._removals: list[Path] = []
        self._made: list[Path] = []  # folders this run created, outermost first
        self.committed = False

    def _mkdir(self, folder: Path) -> None:
        missing = []
        p = folder.absolute()
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._made += [m for m in reversed(missing) if m not in self._made]

    def path(self, target: str | os.PathLike) -> Path:
        """A temporary file beside ``target`` (same suffix, hidden name) that :meth:`commit` moves onto it."""
        t = Path(target)
        self._mkdir(t.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.", suffix=f".partial{t.suffix}", dir=t.parent)
        os.close(fd)
        self._files.append((Path(tmp), t))
        return Path(tmp)

    def folder(self, target: str | os.PathLike) -> Path:
        """A temporary folder inside ``target`` whose files :meth:`commit` moves into ``target``."""
        t = Path(target)
        self._mkdir(t)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=t))
        self._folders.append((tmp, t))
        return tmp

    def remove(self, target: str | os.PathLike) -> None:
        """Remove ``target`` at :meth:`commit` (a file the new ones make stale), never before."""
        self._removals.append(Path(target))

    def commit(self) -> list[Path]:
        """Move every staged file onto its target (os.replace: each one atomic), then make the removals; returns the
        targets written."""
        moves = [(tmp, target) for tmp, target in self._files]
        for tmp, target in self._folders:
            moves += [(f, target / f.name) for f in sorted(tmp.iterdir()) if f.is_file()]
        try:
            self._move(moves)
        except KeyboardInterrupt:
            if self.committed:  # a Ctrl-C held until the files were in place: say what was written
                raise KeyboardInterrupt(f"wrote {', '.join(str(t) for _, t in moves)}") from None
            raise
        return [target for _, target in moves]

    def _move(self, moves: list[tuple[Path, Path]]) -> None:
        with _sigint_deferred():
            try:
                for tmp, target in moves:
                    os.replace(tmp, target)
            except BaseException:  # e.g. a full disk: what was not moved yet is removed, as on failure
                self.discard()
                raise
            for target in self._removals:
                if target.is_file():
                    target.unlink()
            for tmp, _ in self._folders:
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in {target.parent for _, target in moves}:
                with contextlib.suppress(OSError):
                    dir_fd = os.open(folder, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
            self._files, self._folders, self._removals, self._made = [], [], [], []
            self.committed = True

    def discard(self) -> None:
        """Remove the temporary files and folders, then the folders this run created if they are empty."""
        for tmp, _ in self._files:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for tmp, _ in self._folders:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        self._files, self._folders, self._removals, self._made = [], [], [], []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
