"""Initial states: the official uniform start of annealed Langevin dynamics (or data + σ_1 noise), and the
N(0, σ_max² I) prior of the VE-SDE samplers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ncsn_fast.validation import check_int, check_positive

if TYPE_CHECKING:
    from ncsn_fast.config import Config


def init_samples(
    n: int,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    data: torch.Tensor | None = None,
    sigma: float | None = None,
    config: Config | None = None,
) -> torch.Tensor:
    """The start of annealed Langevin dynamics, (n, *shape) float32 on ``device``, in the model's data space.

    As the official sampler: uniform in [0, 1], then the config's ``data_transform`` (so ``rescaled`` configs start
    uniform in [−1, 1]); or, with ``data`` ((M, *shape) images in [0, 1], ``sampling.data_init``), n random images
    mapped by ``data_transform`` plus σ_1·z (``sigma``). Without ``config`` no transform is applied. Raises
    ValueError naming ``n``, ``sigma`` or ``data``.
    """
    from ncsn_fast.data import data_transform

    check_int("n", n, 1)
    if data is None:
        x = torch.rand((n, *shape), generator=generator)
        return (data_transform(config, x, generator) if config is not None else x).to(device)
    if sigma is None:
        raise ValueError("sigma: data initialization needs σ_1 (sigma=None given)")
    check_positive("sigma", sigma)
    if tuple(data.shape[1:]) != tuple(shape):
        raise ValueError(f"data: images of shape {tuple(data.shape[1:])}, the samples are {tuple(shape)}")
    idx = torch.randint(0, data.shape[0], (n,), generator=generator)
    x = data[idx].float()
    if config is not None:
        x = data_transform(config, x, generator)
    return (x + sigma * torch.randn(x.shape, generator=generator)).to(device)


def prior_samples(
    n: int,
    shape: Sequence[int],
    sigma_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T ~ N(0, σ_max² I), (n, *shape) float32: the start of the VE-SDE samplers (pc, heun, cas, dpmpp, adaptive).

    At σ_max = σ_1 (Technique 1: the largest distance between data points) the data's own offset is negligible."""
    check_int("n", n, 1)
    check_positive("sigma_max", sigma_max)
    return (sigma_max * torch.randn((n, *shape), generator=generator)).to(device)
