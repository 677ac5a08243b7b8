"""Configure a model for a dataset with the paper's Techniques 1, 2 and 4: σ_1, γ and L, and ε for T.

result = configure("digits")                          # a preset's data (the digits offline)
result = configure(images)                            # a tensor (N, C, H, W) in [0, 1]
result.config.to_yaml()                               # the config, every value with its origin in result
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ncsn_fast.config import PRESETS, Config, load_config
from ncsn_fast.techniques import geometric_ratio, initial_sigma, langevin_step_lr, num_noise_levels
from ncsn_fast.validation import check_int, check_positive


@dataclass
class Configured:
    config: Config
    dim: int
    sigma_1: float
    gamma: float
    levels: int
    n_steps_each: int
    step_lr: float
    origins: dict[str, str] = field(default_factory=dict)  # value name → where it came from

    def report(self) -> list[str]:
        o = self.origins
        return [
            f"D = {self.dim}",
            f"sigma_1 = {self.sigma_1:.4f}   ({o['sigma_1']})",
            f"gamma   = {self.gamma:.5f}   ({o['gamma']})",
            f"L       = {self.levels}   ({o['levels']})",
            f"T       = {self.n_steps_each}   ({o['n_steps_each']})",
            f"epsilon = {self.step_lr:.3g}   ({o['step_lr']})",
        ]


def _points(dataset: torch.utils.data.Dataset, limit: int, seed: int) -> torch.Tensor:
    """Up to ``limit`` images of a dataset (a random subset when larger), stacked (Appendix B.1's subsample)."""
    from ncsn_fast.data import first_item

    n = len(dataset)
    idx = range(n) if n <= limit else torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    return torch.stack([first_item(dataset[int(i)]) for i in idx])


def load_data(
    source: str | os.PathLike | torch.Tensor, data_root: str | os.PathLike | None = None, limit: int = 10000
) -> tuple[torch.Tensor | None, Config]:
    """(images (N, C, H, W) or None, base config) for :func:`configure`: a preset (its data under ``data_root``,
    the digits offline; without data σ_1 stays the preset's), a tensor, or a ``.pt``/``.npy`` array file."""
    from ncsn_fast.data import DataError, build_dataset
    from ncsn_fast.images import load_tensor

    if isinstance(source, torch.Tensor):
        data = source
        cfg = load_config("cifar10")
    elif str(source) in PRESETS and not Path(source).exists():
        cfg = load_config(str(source))
        try:
            return _points(build_dataset(cfg, data_root), limit, 0), cfg
        except DataError:
            if data_root is not None:
                raise
            return None, cfg
    else:
        p = Path(source)
        if not p.exists():
            raise ValueError(f"data: {str(source)!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        data = load_tensor(p, "data")
        cfg = load_config("cifar10")
        cfg.data.dataset = p.stem.upper()
    if data.dim() != 4 or data.shape[2] != data.shape[3]:
        raise ValueError(f"data: expected square images (N, C, H, W), got shape {tuple(data.shape)}")
    cfg.data.channels, cfg.data.image_size = int(data.shape[1]), int(data.shape[2])
    return data.float(), cfg


def configure(
    data: str | os.PathLike | torch.Tensor,
    sigma_end: float = 0.01,
    n_steps_each: int | None = None,
    data_root: str | os.PathLike | None = None,
) -> Configured:
    """Techniques 1, 2 and 4 for a dataset: σ_1 = the largest pairwise distance (Technique 1), γ and L from the
    dimension D (Technique 2), ε for T = ``n_steps_each`` from Eq. (6) (Technique 4), in a validated config.

    ``data``: a preset name, a tensor (N, C, H, W) in [0, 1] or a ``.pt``/``.npy`` file of one. ``sigma_end``: σ_L.
    Raises ValueError naming the argument.
    """
    check_positive("sigma_end", sigma_end)
    if n_steps_each is not None:
        check_int("n_steps_each", n_steps_each, 1)
    images, cfg = load_data(data, data_root)
    dim = cfg.data.channels * cfg.data.image_size**2
    origins = {}
    if images is not None:
        sigma_1 = initial_sigma(images)
        origins["sigma_1"] = f"Technique 1 on {len(images)} images"
    else:
        sigma_1 = cfg.model.sigma_begin
        origins["sigma_1"] = "the preset (its data is not here: pass data_root / --data)"
    if not sigma_1 > sigma_end:
        raise ValueError(f"sigma_end: must be below σ_1 = {sigma_1:.4g}, got {sigma_end}")
    levels = num_noise_levels(sigma_1, sigma_end, dim)
    gamma = geometric_ratio(sigma_1, sigma_end, levels)
    t = n_steps_each or cfg.sampling.n_steps_each
    eps = langevin_step_lr(gamma, sigma_end, t)
    origins.update(
        gamma=f"Technique 2 for D = {dim}",
        levels="Technique 2",
        n_steps_each="given" if n_steps_each else "the preset",
        step_lr="Technique 4, Eq. (6)",
    )
    cfg.model.sigma_begin = round(sigma_1, 4)
    cfg.model.sigma_end = sigma_end
    cfg.model.num_classes = levels
    cfg.sampling.n_steps_each = cfg.fast_fid.n_steps_each = t
    cfg.sampling.step_lr = cfg.fast_fid.step_lr = float(f"{eps:.3g}")
    return Configured(load_config(cfg.to_dict()), dim, sigma_1, gamma, levels, t, eps, origins)
