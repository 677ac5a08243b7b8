"""Issue 22 item 6 over every command that writes more than one file: a second run into the same output, stopped
by Ctrl-C (KeyboardInterrupt) at its last write, leaves the first run's files byte-identical and none of its own.
Before, each file was replaced as soon as it was written, so an interrupted run left a mix of old and new files.
(The same for `sample` with a real SIGINT: tests/cli/test_sample.py; for `train`: tests/test_train.py.)"""

from __future__ import annotations

import pytest
import torch

from ncsn_fast import io, plotting
from ncsn_fast.cli import main

pytest.importorskip("pytorch_fid", reason="pytorch-fid is part of the test extra; install it with `.[test]`")

OFFLINE = ["--weights", "random", "--method", "eigh", "--no-ema", "--quiet"]


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt(monkeypatch, module, name, at: int = 1):
    """The ``at``-th call of ``module.name`` raises KeyboardInterrupt (the calls before it run)."""
    real, calls = getattr(module, name), []

    def stopped(*args, **kwargs):
        calls.append(name)
        if len(calls) >= at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stopped)
    return calls


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "digits.npz"
    assert main(["fid-stats", "digits", "--out", str(path), "--weights", "random", "--n", "40", "--quiet"]) == 0
    return path


def _cases(root, tiny_ckpts, stats):
    """(first run, second run, where the second is stopped: (module, function, which call))"""
    from ncsn_fast.data import load_digits

    torch.save(load_digits(16)[:3], root / "planted.pt")
    a, b = (str(p) for p in tiny_ckpts)
    fid = ["fid", "--n", "4", "--stats", str(stats), *OFFLINE, "--out", str(root / "out")]
    select = ["fid-select", "--ckpts", a, "--n", "4", "--stats", str(stats), *OFFLINE, "--out", str(root / "out")]
    neighbors = ["neighbors", "--samples", str(root / "planted.pt"), "--quiet", "--out", str(root / "out" / "g.png")]
    sample = ["sample", "--quiet", "--nfe", "10", "--n", "4", "--out", str(root / "out")]
    return {
        "sample": (sample, sample + ["--seed", "1"], (io, "atomic_write", 1)),  # the grid; samples.pt after it
        "fid": (fid + ["--ckpt", a, "--save-samples"], fid + ["--ckpt", b, "--save-samples"], (io, "write_json", 1)),
        "fid-select": (select, select + ["--seed", "1"], (plotting, "save_figure", 1)),
        "neighbors": (neighbors + ["--k", "2"], neighbors + ["--k", "3"], (io, "write_json", 1)),
        "convert": (
            ["convert", a, "--out", str(root / "out")],
            ["convert", b, "--out", str(root / "out")],
            (io, "atomic_write", 2),
        ),  # stopped at config.yaml, after model.safetensors
    }


@pytest.mark.parametrize("command", ["sample", "fid", "fid-select", "neighbors", "convert"])
def test_an_interrupted_run_leaves_the_previous_files_byte_identical(command, tmp_path, tiny_ckpts, stats, capsys,
                                                                    monkeypatch):  # fmt: skip
    first, second, (module, name, at) = _cases(tmp_path, tiny_ckpts, stats)[command]
    assert main(first) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    before = _tree(out)
    assert len(before) >= 2
    calls = _interrupt(monkeypatch, module, name, at)
    code = main(second)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(calls) == at, err
    after = _tree(out)
    if command == "fid-select":  # its progress file is its own (kept, and said), beside the untouched select.json
        assert set(after) - set(before) == {"select.partial.json"} and "select.partial.json" in err[-1]
        after.pop("select.partial.json")
    else:
        assert err[-1] == "ncsn-fast: interrupted; nothing written"
    assert after == before


def test_an_interrupted_bench_leaves_the_previous_tables(tmp_path, capsys, monkeypatch):
    from ncsn_fast import table6

    row = dict(dataset="cifar10", model="NCSNv2", image_size=32, device="cpu", precision="fp32", levels=232,
               steps_each=5, evaluations=1160, sampling_batch=1000, training_batch=128, iterations=300000,
               measured_batch=1, eval_s=0.5, train_step_s=1.0, sampling_min=2.0, training_h=3.0,
               paper_device="Titan XP", paper_sampling_min=1.0, paper_training_h=2.0)  # fmt: skip
    runs = iter([1.0, 7.0])  # two runs that measure differently
    monkeypatch.setattr(table6, "table6", lambda *a, **k: [table6.Row(**{**row, "eval_s": next(runs)})])
    args = ["bench", "table6", "--datasets", "cifar10", "--quick", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    before = _tree(tmp_path / "out")
    assert set(before) == {"table6.md", "table6.json", "table6.png"}
    _interrupt(monkeypatch, plotting, "save_figure")  # the last of the three
    assert main(args) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "ncsn-fast: interrupted; nothing written"
    assert _tree(tmp_path / "out") == before
