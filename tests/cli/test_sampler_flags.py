"""Options that contradict the chosen sampler (issue 22, item 8): each is one line naming the flag, the sampler and
the options it takes, found before the model loads; the warnings name only the running sampler's parameters and
print their numbers in a few digits."""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch

from ncsn_fast.cli import common, main
from ncsn_fast.cli import sample as sample_cli
from ncsn_fast.cli.main import build_parser
from ncsn_fast.sampler_specs import SPECS, cli_options, flags_of, markdown_table
from ncsn_fast.sampling import SamplingPlan
from ncsn_fast.sampling.generate import check_data_range
from ncsn_fast.sampling.registry import SAMPLERS, sampler_parameters
from ncsn_fast.sampling.schedules import thin_schedule, warn_if_too_coarse
from ncsn_fast.techniques import get_sigmas, langevin_step_lr, step_lr_objective
from ncsn_fast.vocab import SAMPLER_OPTIONS


# one value per option, as typed: a valid value of each declared type (choices: one that is not the default)
def _typed(o) -> list[str]:
    if o.type is bool:
        return [f"--no-{o.cli_flag[2:]}"]
    if o.choices:
        return [o.cli_flag, next(c for c in o.choices if c not in (o.default, "tuned"))]
    return [o.cli_flag, {int: "2", float: "0.5", str: "x"}[o.type]]


TYPED = {name: _typed(o) for name, o in cli_options().items()}
REFUSED = [(s, o) for s in SAMPLER_OPTIONS for o in TYPED if o not in SAMPLER_OPTIONS[s]]
TAKEN = [(s, o) for s in SAMPLER_OPTIONS for o in SAMPLER_OPTIONS[s]]


def test_the_declaration_is_the_registry_and_the_signatures():
    """Each sampler is declared once (ncsn_fast.sampler_specs): the declarations name every registered sampler, and
    a sampler's declared options are exactly its signature's keyword options beyond the shared ones, with the same
    defaults — the flags, checks, help and docs table made from them cannot drift from the code."""
    assert set(SAMPLER_OPTIONS) == set(SAMPLERS) == set(SPECS)
    for name, spec in SPECS.items():
        params = inspect.signature(SAMPLERS[name]).parameters
        assert set(spec.option_names) | set(spec.extra) == set(sampler_parameters(name)), name
        for o in spec.options:
            assert params[o.name].default == o.default, (name, o.name)


def test_a_shared_option_is_one_flag_of_one_type():
    """rho, eta, schedule, the corrector's options …: each declared alike by every sampler that takes it."""
    for name, o in cli_options().items():
        for s in SPECS.values():
            other = s.option(name)
            if other is not None:
                assert (other.type, other.cli_flag, other.choices) == (o.type, o.cli_flag, o.choices), (s.name, name)


def test_the_docs_sampler_table_is_the_declaration():
    """docs/sampling.md's sampler table is exactly ``python -m ncsn_fast.sampler_specs`` (regenerate with it)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "sampling.md").read_text()
    assert markdown_table() in page


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is work: every refusal here comes before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(common, "load_model", refuse)


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err.strip().splitlines()
    return [line for line in err if not line.startswith("ncsn-fast: warning:")]


@pytest.mark.parametrize("sampler,option", REFUSED, ids=[f"{s}-{o}" for s, o in REFUSED])
def test_an_option_the_sampler_does_not_take_is_one_line(sampler, option, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    code = main(["sample", "--quiet", "--sampler", sampler, "--nfe", "20", *TYPED[option], "--out", str(out)])
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    takes = ", ".join(TYPED[o][0] if o != "denoise" else "--denoise/--no-denoise" for o in SAMPLER_OPTIONS[sampler])
    assert takes == flags_of(sampler)
    assert lines[0].startswith(f"ncsn-fast: error: {TYPED[option][0]}: ") and f"--sampler {sampler}," in lines[0]
    assert lines[0].endswith(f"which takes {takes}"), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("sampler,option", TAKEN, ids=[f"{s}-{o}" for s, o in TAKEN])
def test_an_option_the_sampler_takes_passes_both_checks(sampler, option):
    # the corrector's levels and SNR go with its steps (alone they would change nothing: refused, NEW_CASES below)
    steps = ["--corrector-steps", "1"] if option in ("corrector_levels", "corrector_snr") else []
    args = build_parser().parse_args(["sample", "--sampler", sampler, "--nfe", "20", *TYPED[option], *steps])
    sample_cli._check_args(args)
    common.sampling_plan(args)  # the library's check (SamplingPlan.check) agrees


HERE = "ald on its own schedule"
SCHEDULE_FLAGS = "--schedule, --corrector-steps, --corrector-levels, --corrector-snr"
ISSUE_CASES = [
    (["--sampler", "heun", "--steps", "3"], "--steps: an option of ald, not of --sampler heun, which takes --rho, "
     f"--churn, --s-tmin, --s-tmax, --s-noise, {SCHEDULE_FLAGS}"),
    (["--sampler", "heun", "--step-lr", "1"], "--step-lr: an option of ald, not of --sampler heun, which takes --rho, "
     f"--churn, --s-tmin, --s-tmax, --s-noise, {SCHEDULE_FLAGS}"),
    (["--sampler", "ald", "--nfe", "25", "--every", "2"], f"--every: goes with {HERE}, without --nfe: drop --nfe 25"),
    (["--nfe", "25", "--every", "2"], f"--every: goes with {HERE}, without --nfe: drop --nfe 25"),
    (["--sampler", "heun", "--every", "2"], f"--every: goes with {HERE} (--sampler ald or none, without --nfe), not "
     "with --sampler heun"),
    (["--nfe", "25", "--steps", "3"], "--steps: an option of ald, not of dpmpp_2m_sde (the sampler for --nfe 25), "
     f"which takes --rho, --eta, --s-noise, {SCHEDULE_FLAGS}"),
]  # fmt: skip


@pytest.mark.parametrize("args,line", ISSUE_CASES, ids=[" ".join(a) for a, _ in ISSUE_CASES])
def test_the_issue_cases_read_as_they_should(args, line, tmp_path, capsys, no_model):
    assert main(["sample", "--quiet", *args, "--out", str(tmp_path / "o")]) == 2
    assert error_lines(capsys) == [f"ncsn-fast: error: {line}"]


def test_the_library_refuses_what_the_sampler_ignores():
    with pytest.raises(ValueError, match=r"^n_steps_each: not an option of the heun sampler, which takes rho, churn, "):
        SamplingPlan(sampler="heun", nfe=10, n_steps_each=3).check()
    with pytest.raises(
        ValueError,
        match=r"^snr: not an option of the euler sampler, which takes rho, schedule, corrector_steps, "
        r"corrector_levels, corrector_snr$",
    ):
        SamplingPlan(sampler="euler", nfe=10, options={"snr": 0.2}).check()
    with pytest.raises(ValueError, match=r"^every: .*without nfe.*nfe=25"):
        SamplingPlan(sampler="ald", nfe=25, every=2).check()
    SamplingPlan(sampler="heun", nfe=10, options={"s_noise": 1.0, "churn": 1.0}).check()  # Python-only options too


def test_denoise_reaches_cas_and_adaptive(monkeypatch):
    """--no-denoise was dropped for cas and adaptive, which take it; now it arrives (and only when given)."""
    import ncsn_fast as nf
    from ncsn_fast.sampling import sample_batches

    seen = {}

    def record(name):
        @functools.wraps(SAMPLERS[name])  # its signature: the plan's check reads it
        def fake(score, x0, nfe, sigma_max, sigma_min, generator=None, **kw):
            seen[name] = kw.get("denoise", "absent")
            return x0.clamp(0, 1)

        return fake

    model, cfg = nf.load_model(device="cpu")[:2]
    for name in ("cas", "adaptive"):
        monkeypatch.setitem(SAMPLERS, name, record(name))
        for denoise in (False, None):
            plan = SamplingPlan(sampler=name, nfe=10, denoise=denoise)
            list(sample_batches(model, cfg, plan, 1, 1, progress=False))
            assert seen[name] == (False if denoise is False else "absent"), (name, denoise)


ALL_PARAMETERS = {p for name in SAMPLERS for p in sampler_parameters(name)} | {"nfe"}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_the_data_range_warning_names_only_the_running_samplers_parameters(sampler):
    import ncsn_fast as nf

    cfg = nf.load_config("digits")
    with pytest.warns(UserWarning, match="did not converge") as record:
        check_data_range(cfg, torch.full((2, 1, 4, 4), 1e4), sampler=sampler)
    message = str(record[0].message)
    named = set(re.findall(r"[a-z_]+", message)) & ALL_PARAMETERS
    assert named and named <= set(sampler_parameters(sampler)) | {"nfe"}, (sampler, named, message)
    assert ("step_lr" in message) == (sampler == "ald"), message


def test_the_data_range_warning_of_a_run_names_its_sampler(monkeypatch, tmp_path, capsys):
    """`--sampler heun --nfe 10` warned "check the step size (step_lr)": heun has none. A heun run whose samples
    leave the data range (a stand-in for heun, so no time is spent) now names heun's own parameters."""
    monkeypatch.setitem(SAMPLERS, "heun", lambda score, x0, nfe, *a, **k: x0 * 1e4)
    code = main(["sample", "--quiet", "--sampler", "heun", "--nfe", "10", "--n", "2", "--out", str(tmp_path / "o")])
    warned = [line for line in capsys.readouterr().err.splitlines() if "did not converge" in line]
    assert code == 0 and len(warned) == 1, warned
    assert "step_lr" not in warned[0]
    assert f"heun sampler's nfe and its options ({', '.join(SAMPLER_OPTIONS['heun'])})" in warned[0]


def digits_sigmas() -> list[float]:
    import ncsn_fast as nf

    return [float(s) for s in get_sigmas(nf.load_config("digits"))]


def eq6_warning(sigmas, step_lr, t) -> str:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert warn_if_too_coarse(sigmas, step_lr, t)
    assert len(record) == 1
    return str(record[0].message)


def test_a_step_size_far_too_large_is_named_as_the_cause_in_readable_numbers():
    """The issue's `--step-lr 1 --every 16` (T = 5): Eq. (6) is 8.99e+41, which was printed with 42 digits and
    blamed on the schedule. The cause is ε: the warning names step_lr and gives Technique 4's ε."""
    sigmas, _, _ = thin_schedule(torch.tensor(digits_sigmas()), 16, 5)
    s = [float(v) for v in sigmas]
    gamma = max(a / b for a, b in zip(s[:-1], s[1:], strict=True))
    assert step_lr_objective(1.0, gamma, s[-1], 5) == pytest.approx(8.99443e41, rel=1e-5)  # the issue's number
    message = eq6_warning(sigmas, 1.0, 5)
    assert (
        message.startswith("step_lr: ") and "s_T²/σ² = 8.99e+41" in message and "the step size is the cause" in message
    )
    assert f"is {langevin_step_lr(gamma, s[-1], 5):.3g}" in message
    assert "too coarse" in message  # every 16th level is too far apart even for Technique 4's ε (1.41)
    assert not re.search(r"\d{6,}", message), message  # no long runs of digits


def test_step_size_on_a_good_schedule_and_a_coarse_schedule_are_told_apart():
    sig = digits_sigmas()
    t4 = langevin_step_lr(sig[0] / sig[1], sig[-1], 5)  # Technique 4: the preset's 1.61e-05
    assert not warn_if_too_coarse(sig, t4, 5)
    message = eq6_warning(sig, 10 * t4, 5)  # the model's own schedule, ε ten times Technique 4's
    assert message.startswith("step_lr: ") and "is 1.61e-05 (1.13 in Eq. (6))" in message and "coarse" not in message
    thinned, _, eps = thin_schedule(torch.tensor(sig), 4, 5)  # every 4th level with Technique 4's own ε
    message = eq6_warning(thinned, eps, 5)
    assert message.startswith("noise schedule: ") and "s_T²/σ² = 1.23 in Eq. (6)" in message
    assert "step_lr" not in message and "more noise levels" in message


def test_the_command_line_reports_the_step_size(tmp_path, capsys):
    """End to end, the issue's command on one sample (21 evaluations of the bundled model)."""
    code = main(["sample", "--quiet", "--step-lr", "1", "--every", "16", "--n", "1", "--out", str(tmp_path / "o")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "Eq. (6)" in line]
    assert code in (0, 1) and len(lines) == 1, lines  # the chain explodes: a finite grid or "diverged"
    assert lines[0].startswith("ncsn-fast: warning: step_lr: ") and "8.99e+41" in lines[0]


NEW_CASES = [
    (["--order", "2"], "--order: an option of unipc, ipndm, not of ald (the default sampler, on the config's own "
     "schedule), which takes --steps, --step-lr, --denoise/--no-denoise"),
    (["--nfe", "3", "--corrector-steps", "2", "--corrector-levels", "2"], "--nfe: the dpmpp_2m_sde sampler needs at "
     "least 6 score evaluations with 2 corrector steps at 2 levels, got 3"),
    (["--nfe", "10", "--corrector-levels", "3"], "--corrector-levels: goes with corrector_steps ≥ 1 (no corrector "
     "runs without steps)"),
    (["--nfe", "10", "--rho", "3", "--schedule", "geometric"], "--rho: shapes the karras schedule only, not schedule "
     "geometric"),
]  # fmt: skip


@pytest.mark.parametrize("args,line", NEW_CASES, ids=[" ".join(a) for a, _ in NEW_CASES])
def test_issue_25_options_that_would_mislead_are_one_line(args, line, tmp_path, capsys, no_model):
    """Found by trying the corrector and schedule flags as a new user: the default sampler is named, a budget error
    says the corrector's share, and options that would change nothing are refused."""
    assert main(["sample", "--quiet", *args, "--out", str(tmp_path / "o")]) == 2
    assert error_lines(capsys) == [f"ncsn-fast: error: {line}"]
    assert not (tmp_path / "o").exists()
