"""Feature statistics: streamed mean and covariance (float64, exact over ranks) and the TTUR ``.npz`` format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ncsn_fast.evaluation.frechet import FIDError, _as_covariance, _as_vector
from ncsn_fast.io import atomic_write


@dataclass
class GaussianStats:
    """Running count, mean and scatter Σ(f − μ)(f − μ)ᵀ of feature vectors, in float64 (Chan et al.'s merge)."""

    dim: int
    n: int = 0
    mean: torch.Tensor = field(default=None)  # type: ignore[assignment]
    scatter: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.mean is None:
            self.mean = torch.zeros(self.dim, dtype=torch.float64)
        if self.scatter is None:
            self.scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def update(self, features: torch.Tensor) -> GaussianStats:
        f = torch.as_tensor(features).detach().to("cpu", torch.float64)
        if f.dim() != 2 or f.shape[1] != self.dim:
            raise FIDError(f"features: expected shape (N, {self.dim}), got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise FIDError("features: non-finite values (a diverged sample or a broken network)")
        if len(f):
            mean_b = f.mean(0)
            c = f - mean_b
            self._merge(len(f), mean_b, c.T @ c)
        return self

    def _merge(self, n_b: int, mean_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        n = self.n + n_b
        delta = mean_b - self.mean
        self.scatter += scatter_b + torch.outer(delta, delta) * (self.n * n_b / n)
        self.mean += delta * (n_b / n)
        self.n = n

    def merge(self, other: GaussianStats) -> GaussianStats:
        if other.dim != self.dim:
            raise FIDError(f"other: dimension {other.dim} differs from {self.dim}")
        if other.n:
            self._merge(other.n, other.mean, other.scatter)
        return self

    def all_reduce(self, device: torch.device | None = None) -> GaussianStats:
        """Combine the statistics of every rank (exact: total scatter = Σ_r [S_r + n_r (μ_r − μ)(μ_r − μ)ᵀ])."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        dev = device if device is not None else torch.device("cpu")
        moments = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64), self.mean * self.n]).to(dev)
        dist.all_reduce(moments)
        n = int(round(moments[0].item()))
        mean = (moments[1:] / max(n, 1)).cpu()
        delta = self.mean - mean
        scatter = (self.scatter + torch.outer(delta, delta) * self.n).to(dev)
        dist.all_reduce(scatter)
        self.n, self.mean, self.scatter = n, mean, scatter.cpu()
        return self

    @property
    def mu(self) -> np.ndarray:
        return self.mean.numpy().copy()

    @property
    def cov(self) -> np.ndarray:
        """The covariance (ddof 1, as np.cov): the ``sigma`` array of a TTUR file."""
        if self.n < 2:
            raise FIDError(f"a covariance needs at least 2 samples, got {self.n}")
        return (self.scatter / (self.n - 1)).numpy()


def save_stats(path: str | Path, mu: Any, cov: Any, protocol: dict[str, Any] | None = None) -> Path:
    """TTUR format: arrays ``mu`` (D,) and ``sigma`` (D, D; the covariance ``cov``) float64; ``protocol`` (JSON
    text) as an extra array that TTUR and pytorch-fid ignore. Written atomically."""
    m = _as_vector(mu, "mu")
    s = _as_covariance(cov, "cov", m.shape[0])
    p = Path(path)
    if p.suffix != ".npz":
        raise FIDError(f"path: statistics files end in .npz, got {str(p)!r}")
    arrays: dict[str, np.ndarray] = {"mu": m, "sigma": s}
    if protocol is not None:
        arrays["protocol"] = np.array(json.dumps(protocol, sort_keys=True))
    return atomic_write(p, lambda f: np.savez(f, **arrays))


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """(mu (D,), cov (D, D), protocol or None) from a TTUR / pytorch-fid / ncsn-fast ``.npz``; FIDError naming the
    file for a missing file, missing arrays or bad shapes."""
    p = Path(path)
    if not p.is_file():
        raise FIDError(f"stats: no such file {str(p)!r}")
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"mu", "sigma"} <= keys:
                raise FIDError(f"stats: {str(p)!r} has arrays {sorted(keys)}, expected 'mu' and 'sigma' (TTUR format)")
            mu, sigma = f["mu"], f["sigma"]
            protocol = json.loads(str(f["protocol"])) if "protocol" in keys else None
    except (OSError, ValueError) as exc:
        if isinstance(exc, FIDError):
            raise
        raise FIDError(f"stats: cannot read {str(p)!r} as .npz: {exc}") from None
    m = _as_vector(mu, f"stats {p.name}: mu")
    return m, _as_covariance(sigma, f"stats {p.name}: sigma", m.shape[0]), protocol
