"""`ncsn-fast doctor`: passes on this machine, fails loudly (exit 1, the rows named) on a broken kernel, --json."""

from __future__ import annotations

import json

import pytest
import torch

from ncsn_fast import doctor
from ncsn_fast.cli.main import main
from ncsn_fast.ops import _backend

HAVE_CPU = _backend.extension_error() is None


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.skipif(not HAVE_CPU, reason="the CPU extension is not built")
def test_cpu_kernels_pass_and_json_holds_every_row(tmp_path, capsys):
    path = tmp_path / "doctor.json"
    code, out, err = run_cli(["doctor", "--backend", "cpu,reference,auto", "--seed", "7", "--json", str(path)], capsys)
    assert code == 0, err
    assert "ncsn_fast._C instance_norm_pp_elu cpu isa" in out and "bf16 matmul/conv on cpu" in out
    assert "doctor: all" in out.splitlines()[-1]
    report = json.loads(path.read_text())
    assert report["failed"] == [] and report["seed"] == 7
    names = {r["name"] for r in report["rows"]}
    kinds = {"instance_norm_pp_elu": (" forward", " backward"), "sde_step_": ("",), "langevin_step_": ("",)}
    for op in kinds:
        for kind in kinds[op]:
            for backend in ("cpu", "reference"):
                for precision in ("fp32", "bf16", "fp16"):
                    for layout in ("nchw", "channels_last"):
                        assert f"{op}{kind} {backend} {precision} {layout} (cpu)" in names
    model = [r for r in report["rows"] if r["check"] == "model"]
    assert {r["name"] for r in model} >= {"digits model forward cpu fp32 (cpu)", "digits model forward auto bf16 (cpu)"}
    checks = [r for r in report["rows"] if r["ok"] is not None]
    assert report["checks"] == len(checks) and all(r["ok"] and r["error"] <= r["tolerance"] for r in checks)
    assert all(r["ms"] is not None and r["ms"] > 0 for r in checks)


@pytest.mark.skipif(not HAVE_CPU, reason="the CPU extension is not built")
def test_a_broken_kernel_fails_loudly_naming_its_rows(tmp_path, capsys, monkeypatch):
    """The CPU kernel broken for bf16 only (one channel zeroed): exit 1, the bf16 rows of that kernel named on
    stderr and in the JSON, every other row still passing."""
    real = torch.ops.ncsn_fast.instance_norm_pp_elu

    def broken(x, alpha, gamma, beta, eps, apply_elu):
        out, mean, rstd = real(x, alpha, gamma, beta, eps, apply_elu)
        if x.dtype == torch.bfloat16:
            out = out.index_fill(1, torch.tensor([x.shape[1] - 1]), 0.0)
        return out, mean, rstd

    monkeypatch.setattr(torch.ops.ncsn_fast, "instance_norm_pp_elu", broken)
    path = tmp_path / "doctor.json"
    argv = ["doctor", "--backend", "cpu,auto", "--op", "instance_norm_pp_elu", "--json", str(path)]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    report = json.loads(path.read_text())
    failed = set(report["failed"])
    assert "instance_norm_pp_elu forward cpu bf16 nchw (cpu)" in failed
    assert "instance_norm_pp_elu forward cpu bf16 channels_last (cpu)" in failed
    assert all(" bf16 " in name for name in failed), failed  # fp32 and fp16 rows untouched
    assert "checks FAILED" in err and "instance_norm_pp_elu forward cpu bf16 nchw (cpu): relative error" in err
    assert "FAIL instance_norm_pp_elu forward cpu bf16 nchw (cpu)" in out


def test_bad_arguments_name_the_flag(capsys):
    code, _, err = run_cli(["doctor", "--op", "fused_attention"], capsys)
    assert code == 2 and "--op: unknown" in err
    code, _, err = run_cli(["doctor", "--backend", "fastest"], capsys)
    assert code == 2 and "--backend: unknown backend 'fastest'" in err


def test_rows_are_functions_returning_rows():
    env = doctor.environment_rows()
    assert all(isinstance(r, doctor.Row) and r.ok is None for r in env)
    assert any(r.name == "torch" for r in env)
    rows = doctor.op_rows("cpu", backends=["reference"], ops=["langevin_step_"])
    assert len(rows) == 6 and all(r.ok for r in rows)


@pytest.mark.slow
def test_full_doctor_passes_here_triton_interpreter_included(capsys):
    """The acceptance run: every backend present (cpu, Triton in its interpreter, reference), every op, the model."""
    code, out, err = run_cli(["doctor"], capsys)
    assert code == 0, err
    assert "triton" in out and " triton bf16 channels_last (cpu)" in out
