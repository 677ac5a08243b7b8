"""Every sampler declared once: its function, what it is, its evaluation-budget rule and its options (name, type,
default, help, check). Torch-free, so that ``ncsn-fast --help`` stays fast (0.1 s; importing the samplers costs the 2 s
of importing torch) — which is why the declarations sit here rather than beside each function; a test holds each
declaration against its function's signature (names and defaults), so they cannot drift.

What is made from it: the registry (:data:`ncsn_fast.sampling.registry.SAMPLERS`, :func:`minimum_nfe`), the command
line's flags, their ``--help`` and the check that an option belongs to the chosen sampler (``ncsn-fast sample``), the
sampling plan's option checks, and the sampler table of docs/sampling.md (:func:`markdown_table`; a test compares).
Adding a sampler: write its function on the sampling runtime, add one :class:`SamplerSpec` to :data:`SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One keyword option of a sampler. ``check``: "positive" (> 0), "nonnegative" (≥ 0), "positive_int" (≥ 1),
    "nonnegative_int" (≥ 0), or None; ``choices`` for strings. ``flag`` defaults to ``--name-with-hyphens``;
    ``cli=False`` keeps an option out of the command line (library only)."""

    name: str
    type: type
    default: Any
    help: str
    check: str | None = None
    choices: tuple[str, ...] = ()
    flag: str | None = None
    cli: bool = True

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: ``function`` ("module:attribute", imported on first use), a one-line ``summary`` (the paper and
    method), ``evaluations`` (how the budget is spent, for the docs), ``min_nfe(options)`` (the smallest budget it
    accepts with those options), ``options``, and ``family``: "ode" (deterministic solver of the probability-flow
    ODE), "sde" (a stochastic solver) or "langevin" (ald, cas, pc: their own geometric levels); ``levels(budget)``:
    how many noise levels a σ-schedule solver takes for the evaluations left to it (heun: (budget + 1)/2)."""

    name: str
    function: str
    summary: str
    evaluations: str
    min_nfe: Callable[[Mapping[str, Any]], int]
    options: tuple[Option, ...]
    family: str
    extra: tuple[str, ...] = field(default=())  # keyword parameters kept out of the declaration (library-only)
    levels: Callable[[int], int] = field(default=lambda budget: budget)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)


def _opt(name: str, kind: type, default: Any, text: str, check: str | None = None, **kw: Any) -> Option:
    return Option(name, kind, default, text, check, **kw)


RHO = _opt("rho", float, 7.0, "Karras schedule ρ", "positive")
SCHEDULE = _opt(
    "schedule", str, "karras", "noise levels: karras (ρ), geometric (NCSNv2's own spacing), or tuned (the model's, "
    "`ncsn-fast tune-schedule`); in the library also a descending list of σ", choices=("karras", "geometric", "tuned"),
)  # fmt: skip
S_NOISE = _opt("s_noise", float, 1.0, "noise scale of the stochastic steps", "positive")
CORRECTOR = (
    _opt("corrector_steps", int, 0, "Langevin corrector steps at each corrected level (counted in the budget)",
         "nonnegative_int"),
    _opt("corrector_levels", int, 1, "how many of the last noise levels get corrector steps", "positive_int"),
    _opt("corrector_snr", float, None, "corrector step size by this target signal-to-noise ratio (Song et al. 2021, "
         "Algorithm 5; default: Technique 4's ε)", "positive"),
)  # fmt: skip
"""The Langevin corrector (:mod:`ncsn_fast.sampling.correctors`), an option of every σ-schedule solver."""


def _corrected(base: int) -> Callable[[Mapping[str, Any]], int]:
    def rule(o: Mapping[str, Any]) -> int:
        return base + int(o.get("corrector_steps") or 0) * int(o.get("corrector_levels") or 1)

    return rule


SPECS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec(
            "ald", "ncsn_fast.sampling.samplers:ald",
            "annealed Langevin dynamics (NCSNv2 Algorithm 1) on ⌊(nfe − 1)/T⌋ geometric levels, ε by Technique 4; "
            "without `--nfe` the config's own schedule (the official sampler)",
            "L·T + 1",
            lambda o: 2 * int(o.get("n_steps_each") or 5) + int(o.get("denoise", True) is not False),
            (
                _opt("n_steps_each", int, 5, "Langevin steps per noise level T (default: the config's; with --nfe 5)",
                     "positive_int", flag="--steps"),
                _opt("step_lr", float, None, "ε (default: the config's, or Technique 4 for another T)", "positive"),
                _opt("denoise", bool, True, "the final denoising step (default: ald the config's sampling.denoise)"),
            ),
            "langevin",
        ),
        SamplerSpec(
            "dpmpp_3m_sde", "ncsn_fast.sampling.multistep:dpmpp_3m_sde",
            "DPM-Solver++(3M) SDE (k-diffusion's `sample_dpmpp_3m_sde`): third-order multistep data prediction, "
            "reverse-SDE noise",
            "nfe", _corrected(2), (RHO, _opt("eta", float, 1.0, "η: 1 the reverse SDE, 0 the ODE"), S_NOISE,
                                   SCHEDULE, *CORRECTOR), "sde",
        ),
        SamplerSpec(
            "dpmpp_2m_sde", "ncsn_fast.sampling.dpm:dpmpp_2m_sde",
            "DPM-Solver++(2M) SDE (Lu et al. 2022, Eq. (18); k-diffusion's midpoint variant)",
            "nfe", _corrected(2), (RHO, _opt("eta", float, 1.0, "η: 1 the reverse SDE, 0 the ODE"), S_NOISE,
                                   SCHEDULE, *CORRECTOR), "sde",
        ),
        SamplerSpec(
            "unipc", "ncsn_fast.sampling.multistep:unipc",
            "UniPC (Zhao et al. 2023): unified predictor–corrector, data prediction, B(h) variants bh1/bh2, "
            "order ≤ 3",
            "nfe", _corrected(2), (
                RHO, _opt("order", int, 3, "order of the predictor and corrector (1–3)"),
                _opt("variant", str, "bh2", "B(h): bh1 = h, bh2 = e^h − 1", choices=("bh1", "bh2")),
                SCHEDULE, *CORRECTOR,
            ), "ode",
        ),
        SamplerSpec(
            "ipndm", "ncsn_fast.sampling.multistep:ipndm",
            "improved PNDM (Zhang & Chen 2023): Adams–Bashforth on dx/dσ = (x − D)/σ, order ≤ 4 with lower-order "
            "warm-up",
            "nfe", _corrected(2), (
                RHO, _opt("order", int, 4, "multistep order (1–4)"), SCHEDULE, *CORRECTOR,
            ), "ode",
        ),
        SamplerSpec(
            "dpmpp_2m", "ncsn_fast.sampling.dpm:dpmpp_2m",
            "DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, log-σ steps; second order",
            "nfe", _corrected(2), (RHO, SCHEDULE, *CORRECTOR), "ode",
        ),
        SamplerSpec(
            "heun", "ncsn_fast.sampling.samplers:heun",
            "Heun on the probability-flow ODE dx/dσ = −σ·s (Karras et al. 2022, Algorithm 2), optional churn; "
            "second order",
            "2N − 1", _corrected(3), (
                RHO, _opt("churn", float, 0.0, "stochastic churn S_churn", "nonnegative"),
                _opt("s_tmin", float, 0.0, "churn only for σ ≥ s_tmin", "nonnegative"),
                _opt("s_tmax", float, float("inf"), "churn only for σ ≤ s_tmax", "positive"),
                S_NOISE, SCHEDULE, *CORRECTOR,
            ), "ode", levels=lambda budget: (budget + 1) // 2,  # N levels: 2N − 1 evaluations
        ),
        SamplerSpec(
            "euler", "ncsn_fast.sampling.samplers:euler",
            "Euler on the same ODE (k-diffusion's `sample_euler`); first order",
            "nfe", _corrected(1), (RHO, SCHEDULE, *CORRECTOR), "ode",
        ),
        SamplerSpec(
            "cas", "ncsn_fast.sampling.samplers:cas",
            "consistent annealed sampling (Jolicoeur-Martineau et al., ICLR 2021), η = 1 − 0.95/γ by default",
            "nfe", lambda o: 2, (
                _opt("eta", float, None, "step fraction η (default 1 − 0.95/γ)"),
                _opt("denoise", bool, True, "the final denoising step"),
            ), "langevin",
        ),
        SamplerSpec(
            "pc", "ncsn_fast.sampling.samplers:pc",
            "reverse-diffusion predictor + Langevin corrector (Song et al., ICLR 2021, VE SDE)",
            "N·(1 + n_corrector)", lambda o: 2 * (1 + int(o.get("n_corrector", 1))), (
                _opt("snr", float, 0.16, "corrector signal-to-noise ratio", "positive"),
                _opt("n_corrector", int, 1, "corrector steps per level", "nonnegative_int"),
            ), "langevin",
        ),
        SamplerSpec(
            "adaptive", "ncsn_fast.sampling.adaptive:adaptive",
            "\"Gotta Go Fast\" (Jolicoeur-Martineau et al. 2021, Algorithm 1): Euler–Maruyama / improved-Euler pair "
            "with a scaled error estimate, a cap, final denoising",
            "as the tolerance needs, ≤ nfe", lambda o: 4, (
                _opt("abs_tol", float, 0.0078, "absolute tolerance", "positive"),
                _opt("rel_tol", float, 0.05, "relative tolerance", "positive"),
                _opt("h_init", float, 0.01, "first step in t ∈ [0, 1]", "positive"),
                _opt("safety", float, 0.9, "step-size safety factor θ", "positive"),
                _opt("exponent", float, 0.9, "step-size exponent r", "positive"),
                _opt("denoise", bool, True, "the final denoising step"),
            ), "sde", extra=("info",),
        ),
    )
}  # fmt: skip
"""The samplers, in the order the docs list them."""

PLAN_FIELDS = ("n_steps_each", "step_lr", "denoise")
"""Options a :class:`~ncsn_fast.sampling.SamplingPlan` holds as its own fields; every other option is in its
``options`` dict."""


def spec(name: str) -> SamplerSpec:
    """The declaration of sampler ``name``; ValueError naming the choices."""
    if name not in SPECS:
        raise ValueError(f"sampler: unknown sampler {name!r}; choose one of {', '.join(sorted(SPECS))}")
    return SPECS[name]


def cli_options() -> dict[str, Option]:
    """Every option the command line sets, by name, once (options shared by samplers — rho, eta, … — are one flag;
    their declarations agree on type and flag, which a test checks)."""
    out: dict[str, Option] = {}
    for s in SPECS.values():
        for o in s.options:
            if o.cli:
                out.setdefault(o.name, o)
    return out


def takers(option: str) -> list[str]:
    """The samplers that take ``option``."""
    return [s.name for s in SPECS.values() if s.option(option) is not None]


def flags_of(sampler: str) -> str:
    """The flags of a sampler's options, e.g. heun: "--rho, --churn, …"; a bool is --name/--no-name."""
    out = []
    for o in SPECS[sampler].options:
        if o.cli:
            out.append(f"{o.cli_flag}/--no-{o.cli_flag[2:]}" if o.type is bool else o.cli_flag)
    return ", ".join(out)


def check_option(o: Option, value: Any, where: str | None = None) -> str | None:
    """The problem with ``value`` for option ``o`` (a one-line message naming ``where`` or the option), or None."""
    name = where or o.name
    if value is None:
        return None
    if o.choices and value not in o.choices:
        return f"{name}: choose one of {', '.join(o.choices)}, got {value!r}"
    if o.check in ("positive", "nonnegative") and not isinstance(value, (int, float)):
        return None  # a schedule given as a list, … : the sampler checks it
    if o.check == "positive" and not value > 0:
        return f"{name}: must be positive, got {value}"
    if o.check == "nonnegative" and not value >= 0:
        return f"{name}: must be ≥ 0, got {value}"
    if o.check == "positive_int" and not value >= 1:
        return f"{name}: must be a positive integer, got {value}"
    if o.check == "nonnegative_int" and not value >= 0:
        return f"{name}: must be ≥ 0, got {value}"
    return None


def _default_text(o: Option) -> str:
    if o.default is None or o.type is bool or "default" in o.help:
        return ""
    return f" (default {o.default:g})" if isinstance(o.default, float) else f" (default {o.default})"


def markdown_table() -> str:
    """The sampler table of docs/sampling.md (a test checks the page holds exactly this)."""
    lines = ["| sampler | what | evaluations | options |", "|---|---|---|---|"]
    for s in SPECS.values():
        opts = ", ".join(f"`{o.name}`" for o in s.options)
        lines.append(f"| `{s.name}` | {s.summary} | {s.evaluations} | {opts} |")
    return "\n".join(lines)


def option_help(o: Option) -> str:
    """``--help`` text of an option: the samplers taking it, what it is and its default — per group of samplers
    where they declare it differently (``eta`` of cas is not ``eta`` of the DPM-Solver++ SDEs)."""
    groups: dict[str, list[str]] = {}
    for s in SPECS.values():
        mine = s.option(o.name)
        if mine is not None:
            groups.setdefault(f"{mine.help}{_default_text(mine)}", []).append(s.name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items())


if __name__ == "__main__":  # python -m ncsn_fast.sampler_specs: the docs' table
    print(markdown_table())
