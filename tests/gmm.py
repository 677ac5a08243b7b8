"""A well-separated Gaussian mixture with a closed-form noisy score, for sampler tests."""

from __future__ import annotations

import torch


class GaussianMixture:
    """p(x) = Σ_k w_k N(μ_k, s²I); convolved with N(0, σ²I) it stays a mixture with variance s² + σ²."""

    def __init__(self, dim: int = 64, weights=(0.2, 0.3, 0.5), std: float = 1.0, spread: float = 8.0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.dim, self.std = dim, std
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.randn(len(weights), dim, generator=g, dtype=torch.float64) * spread / dim**0.5 * 3

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.std * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def score_at(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """∇ log (p ∗ N(0, σ²I))(x); σ a scalar or one value per sample."""
        v = (self.std**2 + torch.as_tensor(sigma, dtype=torch.float64) ** 2).reshape(-1, 1)  # (N or 1, 1)
        diff = self.means[None] - x.double()[:, None]  # (N, K, D)
        logp = torch.log(self.weights)[None] - 0.5 * diff.square().sum(-1) / v
        r = torch.softmax(logp, dim=1)
        return ((r[..., None] * diff).sum(1) / v).to(x.dtype)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x.double(), self.means).argmin(dim=1)

    def report(self, x: torch.Tensor) -> dict[str, list[float]]:
        """Per-mode weight, relative mean error ‖m̂ − μ‖/‖μ‖ and std (mean per-coordinate std)."""
        k = self.assign(x)
        out = {"weight": [], "mean_err": [], "std": []}
        for i in range(len(self.weights)):
            xi = x[k == i].double()
            out["weight"].append(len(xi) / len(x))
            out["mean_err"].append(
                float((xi.mean(0) - self.means[i]).norm() / self.means[i].norm()) if len(xi) else 1.0
            )
            out["std"].append(float(xi.std(0).mean()) if len(xi) > 1 else 0.0)
        return out
