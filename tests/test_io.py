"""ncsn_fast.io: a run's files replace the previous ones together and only on success (issue 22 item 6)."""

from __future__ import annotations

import os
import signal

import pytest

from ncsn_fast import io
from ncsn_fast.io import Staged, atomic_write


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(path, text):
    return atomic_write(path, lambda f: f.write(text.encode()))


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError, ValueError])
def test_a_failed_run_leaves_every_previous_file_byte_identical_and_none_of_its_own(tmp_path, fault):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"previous a")
    (out / "c.json").write_bytes(b"previous c, a file the new run does not write")
    before = _tree(tmp_path)
    with pytest.raises(fault), Staged() as stage:
        _write(stage.path(out / "a.png"), "new a")
        _write(stage.path(out / "b.pt"), "new b")
        _write(stage.folder(out) / "d.yaml", "new d")
        _write(stage.path(tmp_path / "made" / "deeper" / "e.json"), "new e")
        stage.remove(out / "c.json")
        raise fault("stopped")
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the folders it made are gone too


def test_a_run_that_succeeds_replaces_all_its_files_together(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"previous a")
    (out / "c.json").write_bytes(b"stale c")
    (out / "keep.txt").write_bytes(b"not this run's")
    with Staged() as stage:
        a = stage.path(out / "a.png")
        assert a.suffix == ".png" and a.parent == out and a.name.startswith(".a.png.")  # writers check suffixes
        _write(a, "new a")
        _write(stage.folder(tmp_path / "new") / "d.yaml", "new d")
        stage.remove(out / "c.json")
        assert (out / "a.png").read_bytes() == b"previous a"  # nothing moves before the end
    assert stage.committed
    assert _tree(tmp_path) == {"out/a.png": b"new a", "out/keep.txt": b"not this run's", "new/d.yaml": b"new d"}


def test_ctrl_c_during_the_commit_is_held_until_every_file_is_in_place(tmp_path, monkeypatch):
    """A SIGINT landing between two renames of the commit: the renames finish, then KeyboardInterrupt is raised."""
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to this (the main) thread right now
        real_replace(src, dst)

    out = tmp_path / "out"
    stage = Staged()
    for name in ("a.png", "b.pt", "c.json"):
        _write(stage.path(out / name), name)
    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt, match="wrote .*a.png.*b.pt.*c.json"):
        stage.commit()
    monkeypatch.undo()
    assert stage.committed and len(calls) == 3
    assert _tree(out) == {"a.png": b"a.png", "b.pt": b"b.pt", "c.json": b"c.json"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
