"""Images from a model in batches: what ``ncsn-fast sample``, FID and nearest neighbours draw their samples with.

A :class:`SamplingPlan` names the sampler and its settings; :meth:`SamplingPlan.resolve` fills what the user left
out from the config (T, ε by :func:`~ncsn_fast.techniques.resolve_step_lr`, denoising, data initialisation) and
records where each value came from. :func:`sample_batches` then yields global batches of images in [0, 1]: batch b
draws everything (initial state, Langevin noise) from its own seed stream ``derive_seed(seed, b)``, and rank r of
``world`` takes the batches b ≡ r (mod world) — the samples are the same on one process or on eight, and the same
whatever the batch size is split into processes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ncsn_fast.precision import check_precision
from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.initial import init_samples, prior_samples
from ncsn_fast.sampling.langevin import annealed_langevin, tweedie_denoise
from ncsn_fast.sampling.registry import get_sampler, minimum_nfe, sampler_parameters
from ncsn_fast.sampling.schedules import thin_schedule
from ncsn_fast.seeding import derive_seed
from ncsn_fast.validation import check_int, check_model_input, check_positive, describe
from ncsn_fast.vocab import SAMPLER_OPTIONS

if TYPE_CHECKING:
    from ncsn_fast.config import Config


@dataclass
class SamplingPlan:
    """How samples are drawn. ``sampler="ald"`` without ``nfe`` is the official sampler on the config's own
    schedule (optionally thinned by ``every``); any ``nfe`` selects the budget samplers of
    :mod:`ncsn_fast.sampling.samplers` with ``options`` (churn, eta, snr …). ``None`` fields come from the config."""

    sampler: str = "ald"
    nfe: int | None = None
    n_steps_each: int | None = None
    step_lr: float | None = None
    every: int | None = None
    denoise: bool | None = None
    data_init: bool | None = None
    seed: int = 0
    precision: str = "fp32"
    backend: str = "auto"
    cuda_graphs: bool = False
    compile: bool | str = False  # False, True/"jit", "aot": the network through ncsn_fast.inference_network
    section: str = "sampling"  # or "fast_fid": the config section T and ε default from
    model_source: str | None = None  # the checkpoint a tuned schedule is stored with (None: the bundled model)
    ema: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> SamplingPlan:
        get_sampler(self.sampler)
        for name in ("nfe", "n_steps_each", "every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if self.step_lr is not None:
            check_positive("step_lr", self.step_lr)
        check_int("seed", self.seed, 0)
        check_precision("precision", self.precision)
        runtime.check_backend("backend", self.backend)
        if self.compile not in (False, None):
            from ncsn_fast.inference import check_compile

            check_compile("compile", self.compile)
        taken = sampler_parameters(self.sampler)
        given = [name for name in ("n_steps_each", "step_lr", "denoise") if getattr(self, name) is not None]
        for name in [*given, *self.options]:
            if name not in taken:
                raise ValueError(f"{name}: not an option of the {self.sampler} sampler, which takes {', '.join(taken)}")
        if self.budget and self.every:
            why = f"nfe={self.nfe}" if self.sampler == "ald" else f"sampler {self.sampler!r}"
            raise ValueError(f"every: thins ald's own schedule (the config's, without nfe); not for {why}")
        if self.budget:
            opts = {**self.options, "n_steps_each": self.n_steps_each or 5}
            least = minimum_nfe(self.sampler, **opts)
            if (self.nfe if self.nfe is not None else 100) < least:
                steps = self.options.get("corrector_steps") or 0
                with_corrector = (
                    f" with {steps} corrector steps at {self.options.get('corrector_levels') or 1} levels"
                    if steps
                    else ""
                )
                raise ValueError(
                    f"nfe: the {self.sampler} sampler needs at least {least} score evaluations{with_corrector}, "
                    f"got {self.nfe}"
                )
        self._check_options_take_effect()
        return self

    def _check_options_take_effect(self) -> None:
        """An option that would change nothing is an error naming it and what it goes with: the corrector's levels or
        SNR without its steps, ρ with a schedule other than Karras'."""
        o = self.options
        if not o.get("corrector_steps"):
            for name in ("corrector_levels", "corrector_snr"):
                if o.get(name) is not None:
                    raise ValueError(f"{name}: goes with corrector_steps ≥ 1 (no corrector runs without steps)")
        if o.get("rho") is not None and o.get("schedule", "karras") != "karras":
            what = o["schedule"] if isinstance(o["schedule"], str) else "a given list"
            raise ValueError(f"rho: shapes the karras schedule only, not schedule {what}")

    @property
    def budget(self) -> bool:
        return self.sampler != "ald" or self.nfe is not None

    def resolve(self, cfg: Config, conditional: bool = False) -> ResolvedPlan:
        """Fill the config's defaults; ValueError for a budget sampler on the original (label-conditioned) NCSN."""
        from ncsn_fast.techniques import get_sigmas, resolve_step_lr

        self.check()
        if self.budget and conditional:
            raise ValueError(
                f"sampler: {self.sampler} with an evaluation budget needs a σ-continuous NCSNv2-family model "
                "(Technique 3); the original NCSN is conditioned on its own noise levels: use ald without nfe"
            )
        section = getattr(cfg, self.section)
        default_t = section.n_steps_each or cfg.sampling.n_steps_each
        t = self.n_steps_each or default_t
        sigmas = get_sigmas(cfg)
        labels = list(range(len(sigmas)))
        if self.every and self.every > 1:
            sigmas, labels, eps = thin_schedule(sigmas, self.every, t)
            origin = f"Technique 4 for the schedule thinned by {self.every}"
        else:
            eps, origin = resolve_step_lr(cfg, t, self.section)
        if self.step_lr is not None:
            eps, origin = self.step_lr, "given"
        denoise = cfg.sampling.denoise if self.denoise is None else self.denoise
        data_init = cfg.sampling.data_init if self.data_init is None else self.data_init
        if self.budget:
            data_init = False
            nfe = self.nfe if self.nfe is not None else 100
            if self.options.get("schedule") == "tuned":
                self.options = {**self.options, "schedule": self.tuned_schedule(cfg, nfe)}
        else:
            nfe = len(sigmas) * t + int(denoise)
        return ResolvedPlan(self, sigmas, labels, t, float(eps), origin, bool(denoise), bool(data_init), nfe)

    def tuned_schedule(self, cfg: Config, nfe: int) -> list[float]:
        """The stored schedule (``ncsn-fast tune-schedule``) for this model, sampler family and the number of levels
        the sampler takes at this budget (corrector steps out; heun's 2N − 1); ValueError naming ``schedule`` that
        says how to make one when there is none."""
        from ncsn_fast.sampler_specs import spec
        from ncsn_fast.sampling.tuning import load_tuned_schedule

        family = spec(self.sampler).family
        steps = nfe - int(self.options.get("corrector_steps") or 0) * int(self.options.get("corrector_levels") or 1)
        levels = spec(self.sampler).levels(steps)
        solver = "sde" if family == "sde" else "ode"
        sigma_max, sigma_min = float(cfg.model.sigma_begin), float(cfg.model.sigma_end)
        found = load_tuned_schedule(
            self.model_source, levels, sigma_max=sigma_max, sigma_min=sigma_min, solver=solver, ema=self.ema
        )
        if found is None:
            where = f" --ckpt {self.model_source}" if self.model_source else ""
            raise ValueError(
                f"schedule: no tuned {solver} schedule of {levels} levels stored for this model; make one with "
                f"`ncsn-fast tune-schedule{where} --nfe {levels}{' --solver ode' if solver == 'ode' else ''}`"
            )
        return found.tolist()


@dataclass
class ResolvedPlan:
    plan: SamplingPlan
    sigmas: torch.Tensor
    labels: list[int]
    n_steps_each: int
    step_lr: float
    step_lr_origin: str
    denoise: bool
    data_init: bool
    nfe: int

    def protocol(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """The sampling half of an evaluation's protocol (FID records it with every result); ``compile`` is the
        network that ran on ``device`` ("eager", "jit", "aot"), with ``compile_asked`` where a plan's compile was
        not worth it there (:func:`ncsn_fast.inference.compile_pays`)."""
        p = self.plan
        out: dict[str, Any] = {"sampler": p.sampler, "nfe": self.nfe, "seed": p.seed, "precision": p.precision}
        asked, runs, _ = compile_mode(p, device)
        out["compile"] = runs or "eager"
        if asked != runs:
            out["compile_asked"] = asked
        out["init"] = "data + σ1 noise" if self.data_init else "uniform [0, 1] (official)"
        if not p.budget:
            out.update(steps_each=self.n_steps_each, step_lr=self.step_lr, levels=len(self.sigmas))
        out.update({f"option_{k}": v for k, v in p.options.items()})
        if p.budget and p.sampler != "ald" and p.denoise is not None:
            out["option_denoise"] = p.denoise
        return out

    def describe(self) -> str:
        p = self.plan
        if p.budget:
            given = {"denoise": p.denoise} if p.denoise is not None and p.sampler != "ald" else {}
            opts = "".join(f" {k}={_short(v)}" for k, v in {**p.options, **given}.items())
            return f"sampler={p.sampler} nfe≤{self.nfe}{opts}"
        return (
            f"L={len(self.sigmas)} T={self.n_steps_each} ε={self.step_lr:.3g} ({self.step_lr_origin}) "
            f"denoise={self.denoise} ({self.nfe} network evaluations)"
        )


def _short(value: Any) -> str:
    """An option for a one-line description: a schedule given as a list as its range and length."""
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"[{value[0]:.4g} … {value[-1]:.4g}] ({len(value)} levels)"
    return str(value)


def compile_mode(plan: SamplingPlan, device: torch.device | str) -> tuple[str | None, str | None, str | None]:
    """``(asked, runs, why)`` for a plan on ``device``: the compile mode asked ("jit", "aot" or None), the one that
    runs (None: eager) and why it differs (:func:`ncsn_fast.inference.compile_pays`), else None."""
    if plan.compile in (False, None):
        return None, None, None
    from ncsn_fast.inference import check_compile, compile_pays

    asked = check_compile("compile", plan.compile)
    why = compile_pays(device, plan.precision, asked)
    return asked, (asked if why is None else None), why


def batch_seed(seed: int, index: int) -> int:
    """The seed of global batch ``index``: independent streams per batch, the same whatever the world size."""
    return derive_seed(seed, index)


def check_data_range(cfg: Config, x: torch.Tensor, where: str = "samples", sampler: str = "ald") -> None:
    """Warn when samples (in the model's data space) leave the data range by far: a chain that exploded to huge
    finite values (a step size far too large) would otherwise give a grid of saturated noise silently. The warning
    names only parameters of ``sampler``, the sampler that ran."""
    lo, hi = (-1.0, 1.0) if cfg.data.rescaled else (0.0, 1.0)
    if cfg.data.logit_transform:
        lo, hi = -14.0, 14.0  # logit(1e-6) … logit(1 − 1e-6)
    span = hi - lo
    outside = ((x < lo - span) | (x > hi + span)).float().mean().item()
    if outside > 0.01:
        warnings.warn(
            f"{where}: {100 * outside:.0f}% of the values are far outside the data range [{lo:g}, {hi:g}] "
            f"(|x| up to {float(x.abs().max()):.3g}): the chain did not converge; {_convergence_hint(sampler)}",
            stacklevel=3,
        )


def _convergence_hint(sampler: str) -> str:
    options = SAMPLER_OPTIONS.get(sampler, ())
    if "step_lr" in options:
        return "check the step size (step_lr)"
    named = f" and its options ({', '.join(options)})" if options else ""
    return f"check the {sampler} sampler's nfe{named}"


@dataclass
class SampleBatch:
    index: int
    images: torch.Tensor  # (B, C, H, W) in [0, 1] on the model's device, the plan's denoising applied
    other: torch.Tensor | None = None  # the other denoising mode of the same chain (both_modes=True)


def sample_batches(
    model: torch.nn.Module,
    cfg: Config,
    plan: SamplingPlan | ResolvedPlan,
    n: int,
    batch_size: int,
    data: torch.Tensor | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    both_modes: bool = False,
    callback: Any = None,
) -> Iterator[SampleBatch]:
    """This rank's share of ``n`` samples, in global batches of ``batch_size``, as images in [0, 1].

    ``data``: (M, C, H, W) images in [0, 1] for data initialisation. ``both_modes`` (ALD only): also return the
    other denoising mode of each chain (one extra evaluation: Tweedie's step on the final state). One progress bar
    counts network evaluations over all of this rank's batches. A plan's ``compile`` builds the network once
    (:func:`~ncsn_fast.inference.inference_network` in the plan's precision) and samples with it.
    """
    from ncsn_fast.data import inverse_data_transform

    check_int("n", n, 1)
    check_int("batch_size", batch_size, 1)
    model = check_sampling_model(model, cfg)
    resolved = plan if isinstance(plan, ResolvedPlan) else plan.resolve(cfg, getattr(model, "conditional", False))
    p = resolved.plan
    if resolved.data_init and data is None:
        raise ValueError("data: data initialisation (sampling.data_init) needs the training images")
    if resolved.data_init:
        size = cfg.data.image_size
        check_model_input("data", data, cfg.data.channels, owner="data initialisation", to_data_space="data / 255")
        if tuple(data.shape[2:]) != (size, size):
            raise ValueError(f"data: initialisation takes the config's {size}×{size} images, got {describe(data)}")
    device = next(model.parameters()).device
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    mine = list(range(rank, -(-n // batch_size), world))
    sizes = {b: min(batch_size, n - b * batch_size) for b in mine}
    bar = runtime.progress_bar(len(mine) * resolved.nfe + (len(mine) if both_modes else 0), "sampling", progress)
    rt = {"precision": p.precision, "backend": p.backend, "cuda_graphs": p.cuda_graphs}
    _, runs, why = compile_mode(p, device)
    if runs is not None:
        from ncsn_fast.inference import inference_network

        model = inference_network(model, p.precision, runs, device)  # samplers take it as it is
    elif why is not None:  # issue 23: --compile is never slower than eager; where it would be, it says so
        warnings.warn(f"compile: {why}; running eager", stacklevel=2)
    try:
        for b in mine:
            gen = torch.Generator().manual_seed(batch_seed(p.seed, b))
            x = _sample_one(model, cfg, resolved, sizes[b], shape, gen, device, data, bar, rt, callback, both_modes)
            check_data_range(cfg, x[0], sampler=p.sampler)
            images = [inverse_data_transform(cfg, t.float()) for t in x]
            yield SampleBatch(b, images[0], images[1] if both_modes else None)
    finally:
        bar.close()


def check_sampling_model(model: Any, cfg: Config) -> torch.nn.Module:
    """The model that :func:`sample_batches` samples from: an ``nn.Module`` (a bound ``model.score`` is taken as its
    model) that takes the config's images; one-line errors naming ``model`` or ``cfg``."""
    model = getattr(model, "__self__", model) if callable(getattr(model, "__self__", None)) else model
    if not isinstance(model, torch.nn.Module) or next(model.parameters(), None) is None:
        raise TypeError(f"model: expected an ncsn-fast model (an nn.Module with weights), got {describe(model)}")
    inner = runtime.model_of(model)
    if inner is not None:
        c, size, div = cfg.data.channels, cfg.data.image_size, inner.downsample_factor
        if c != inner.config.data.channels:
            raise ValueError(
                f"cfg: data.channels is {c}, the model ({type(inner).__name__}) takes {inner.config.data.channels}"
            )
        if size % div:
            raise ValueError(
                f"cfg: data.image_size is {size}, {type(inner).__name__} downsamples by {div}: the size "
                f"must be a multiple of {div}"
            )
    return model


def _sample_one(model, cfg, r: ResolvedPlan, size, shape, gen, device, data, bar, rt, callback, both_modes):
    p = r.plan
    channels_last = device.type == "cpu"  # 1.5× faster convolutions on the CPU (measured on the digits model)

    def cl(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    if not p.budget:
        sigma_1 = float(r.sigmas[0])
        x0 = cl(init_samples(size, shape, gen, device, data if r.data_init else None, sigma_1, config=cfg))
        denoise_now = r.denoise and not both_modes
        x = annealed_langevin(
            model, x0, r.sigmas, r.n_steps_each, r.step_lr, denoise_now, gen, p.backend, True, callback, r.labels,
            bar, precision=p.precision, cuda_graphs=p.cuda_graphs,
        )  # fmt: skip
        if not both_modes:
            return (x,)
        y = torch.full((size,), r.labels[-1], dtype=torch.long, device=device)
        net = runtime.network(model, device, **rt)
        with torch.no_grad():
            denoised = tweedie_denoise(net, cl(x), float(r.sigmas[-1]), y)
        bar.update(1)
        return (denoised, x) if r.denoise else (x, denoised)
    if both_modes:
        raise ValueError(f"both_modes: only for ald on the config's schedule, not sampler {p.sampler!r}")
    sigma_max, sigma_min = float(cfg.model.sigma_begin), float(cfg.model.sigma_end)
    options = dict(p.options)
    if p.sampler == "ald":
        x0 = cl(init_samples(size, shape, gen, device, config=cfg))
        options.update(n_steps_each=r.n_steps_each, step_lr=p.step_lr, denoise=r.denoise)
    else:
        x0 = cl(prior_samples(size, shape, sigma_max, gen, device))
        if p.denoise is not None:  # cas, adaptive: denoise only when asked (check() refused it for the others)
            options.update(denoise=p.denoise)
    sampler = get_sampler(p.sampler)
    return (sampler(model.score, x0, r.nfe, sigma_max, sigma_min, gen, progress=bar, **rt, **options),)


def replace(plan: SamplingPlan, **changes: Any) -> SamplingPlan:
    return dataclasses.replace(plan, **changes)
