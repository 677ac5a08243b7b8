"""A Langevin corrector for any σ-schedule solver: a few Langevin steps at the last noise levels of its schedule,
counted in its evaluation budget, through the fused noisy update
(:meth:`~ncsn_fast.sampling.runtime.NoiseStream.step_`).

A solver that has brought x to level σ_k (k ≥ 1, σ_k > 0) hands it to :meth:`LangevinCorrector.after_step`, which,
when σ_k is one of the ``levels`` last positive levels, runs ``steps`` Langevin steps x ← x + α·s(x, σ_k) + √(2α)·z
(NCSNv2 Algorithm 1's inner loop at one level; Song et al. 2021's corrector). The step size α is either

- Technique 4 (NCSNv2 Eq. (6)): α = ε·σ_k²/σ_min², ε = :func:`~ncsn_fast.techniques.langevin_step_lr` for the
  schedule's ratio γ = σ_{k−1}/σ_k at the first corrected level and T = ``steps`` (the default), or
- the target signal-to-noise ratio r (Song et al. 2021, Algorithm 5): α = 2(r‖z‖/‖s‖)², batch-mean norms, ‖z‖ its
  expectation √D on the fused path (as :func:`~ncsn_fast.sampling.samplers.pc`).

The samples the deterministic solvers give on the digits model keep speckles that the Langevin steps at the last
levels wash out (docs/sampling.md measures it); the multistep history the solver keeps is left as it was (the
corrected x is the new state, the earlier denoised values stay — as a predictor–corrector scheme does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.runtime import NoiseStream, Score
from ncsn_fast.techniques import langevin_step_lr
from ncsn_fast.validation import check_int, check_positive


@dataclass
class LangevinCorrector:
    """``steps`` Langevin steps at each of the last ``levels`` positive noise levels; step size by ``snr`` when
    given, else Technique 4. ``steps == 0`` is no corrector. ValueError naming ``corrector_steps``,
    ``corrector_levels`` or ``corrector_snr`` for a bad value."""

    steps: int = 0
    levels: int = 1
    snr: float | None = None

    def __post_init__(self) -> None:
        check_int("corrector_steps", self.steps, 0)
        check_int("corrector_levels", self.levels, 1)
        if self.snr is not None:
            check_positive("corrector_snr", self.snr)

    @property
    def evaluations(self) -> int:
        """Network evaluations the corrector spends (taken from the solver's budget)."""
        return self.steps * self.levels

    def solver_budget(self, nfe: int, sampler: str, minimum: int) -> int:
        """The evaluations left to the solver; ValueError naming ``nfe`` when they fall below its ``minimum``."""
        left = nfe - self.evaluations
        if left < minimum:
            raise ValueError(
                f"nfe: the {sampler} sampler needs at least {minimum + self.evaluations} score evaluations with "
                f"{self.steps} corrector steps at {self.levels} levels, got {nfe}"
            )
        return left

    def bind(self, sigmas: list[float]) -> None:
        """Fix the corrected levels and Technique 4's ε for a solver schedule σ_0 > … (> 0, maybe a final 0)."""
        positive = [s for s in sigmas if s > 0]
        self.levels_at = positive[max(1, len(positive) - self.levels) :] if self.steps else []
        self.sigma_min = positive[-1]
        first = positive.index(self.levels_at[0]) if self.levels_at else 0
        gamma = positive[first - 1] / positive[first] if first >= 1 else 1.0
        self.eps = langevin_step_lr(max(gamma, 1.0 + 1e-6), self.sigma_min, max(self.steps, 1))

    def after_step(
        self, net: Score, noise: NoiseStream, x: torch.Tensor, sigma: float, bar: Any = None
    ) -> torch.Tensor:
        """x after the corrector steps at level ``sigma`` (unchanged when ``sigma`` is not a corrected level).
        ``x`` is contiguous and updated in place on the fused path."""
        if not self.steps or sigma not in self.levels_at:
            return x
        sig = torch.full((x.shape[0],), float(sigma), dtype=torch.float32, device=x.device)
        dim = x[0].numel()
        for _ in range(self.steps):
            grad = net(x, sig).to(x.dtype)
            if self.snr is None:
                alpha = self.eps * (sigma / self.sigma_min) ** 2
            else:
                g_norm = float(grad.flatten(1).norm(dim=1).mean())
                alpha = 2 * (self.snr * math.sqrt(dim) / max(g_norm, 1e-30)) ** 2
            x = x.contiguous()
            noise.step_(x, grad.contiguous(), 1.0, alpha, math.sqrt(2 * alpha))
            runtime.check_finite(x, "corrector", 0, sigma)
            if bar is not None:
                bar.update(1)
        return x


def solver_schedule(
    corrector: LangevinCorrector,
    sampler: str,
    minimum: int,
    nfe: int,
    schedule: Any,
    sigma_max: float,
    sigma_min: float,
    rho: float,
) -> list[float]:
    """A σ-schedule solver's levels σ_0 … σ_{n−1}, 0 (:func:`~ncsn_fast.sampling.schedules.solver_sigmas`) for the
    budget the corrector leaves it (the sampler's ``SamplerSpec.levels`` of it: heun's (budget + 1)/2), with the
    corrector bound to them. ValueError naming ``nfe`` when the corrector leaves less than ``minimum``, or
    ``schedule``."""
    from ncsn_fast.sampler_specs import spec
    from ncsn_fast.sampling.schedules import solver_sigmas

    levels = spec(sampler).levels(corrector.solver_budget(nfe, sampler, minimum))
    sigmas = solver_sigmas(schedule, sigma_max, sigma_min, levels, rho)
    corrector.bind(sigmas)
    return sigmas
