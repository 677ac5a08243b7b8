"""`ncsn-fast bench table6`: rows beside the paper's Table 6, projections consistent with the measurements."""

from __future__ import annotations

import json

import pytest

from ncsn_fast.cli import main
from ncsn_fast.table6 import PAPER


def test_table6_quick_on_cifar10(tmp_path, capsys):
    assert main(["bench", "table6", "--quick", "--datasets", "cifar10", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| cifar10 | NCSNv2 32px |" in printed and "2 min, 2x V100" in printed and "22 h, 2x V100" in printed
    row = json.loads((tmp_path / "table6.json").read_text())["rows"][0]
    # The projection is the measurement scaled: L·T + 1 = 232·5 + 1 evaluations of a 100-image batch,
    # and 300k training steps of batch 128, measured at batch 1.
    assert row["levels"] == 232 and row["evaluations"] == 1161 and row["measured_batch"] == 1
    assert row["sampling_min"] == pytest.approx(row["eval_s"] * 100 * 1161 / 60)
    assert row["training_h"] == pytest.approx(row["train_step_s"] * 128 * 300_000 / 3600)
    assert (tmp_path / "table6.png").stat().st_size > 1000
    assert (tmp_path / "table6.md").read_text().startswith("20")  # the date, then the command


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--datasets", "cifar100"], "--datasets: unknown"),
        (["--device", "cuda"], "--device: 'cuda' asked for but no CUDA device"),
        (["--k", "0"], "--k: must be at least 1"),
    ],
)
def test_table6_bad_arguments(argv, match, capsys, tmp_path):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "table6", "--out", str(tmp_path), *argv]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
def test_table6_quick_prints_all_six_rows(tmp_path, capsys):
    assert main(["bench", "table6", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for dataset in PAPER:
        assert f"| {dataset} |" in printed
