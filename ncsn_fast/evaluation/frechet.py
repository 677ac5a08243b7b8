"""The Fréchet distance between two Gaussians (the FID formula of Heusel et al. 2017, TTUR's implementation)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


class FIDError(ValueError):
    """A bad statistics file, weights file or input: the message names it."""


def _as_vector(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise FIDError(f"{name}: expected a vector (D,), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise FIDError(f"{name}: has non-finite entries")
    return a


def _as_covariance(s: Any, name: str, d: int) -> np.ndarray:
    a = np.asarray(s, dtype=np.float64)
    if a.shape != (d, d):
        raise FIDError(f"{name}: expected a ({d}, {d}) covariance matching the mean, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise FIDError(f"{name}: has non-finite entries")
    return a


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular products; finiteness is checked by the caller
        return linalg.sqrtm(a)


def _trace_sqrt_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr (Σ1 Σ2)^½ = Tr (Σ1^½ Σ2 Σ1^½)^½: two symmetric eigendecompositions, real by construction."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s2 @ root)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def frechet_distance(
    mu1: Any,
    cov1: Any,
    mu2: Any,
    cov2: Any,
    eps: float = 1e-6,
    imag_atol: float = 1e-3,
    method: str = "sqrtm",
) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) between N(μ1, Σ1) and N(μ2, Σ2), in float64.

    ``mu1``, ``mu2``: means (D,); ``cov1``, ``cov2``: covariances (D, D) (TTUR files call them ``sigma``; here σ
    keeps its meaning of a noise level). Raises :class:`FIDError` naming the argument for bad shapes or values.

    (Σ1 Σ2)^½ by ``scipy.linalg.sqrtm``, as the TTUR / pytorch-fid reference does, so published statistics give
    published numbers. When the product is singular enough that sqrtm returns non-finite values, ε·I is added to
    both covariances and the root recomputed (with a warning). Rounding can leave a small imaginary part; one on
    the diagonal larger than ``imag_atol`` means the inputs are not covariances (not positive semi-definite) and
    raises :class:`FIDError` with its size.

    ``method="eigh"`` computes the same trace as Tr (Σ1^½ Σ2 Σ1^½)^½ from symmetric eigendecompositions (negative
    rounding-level eigenvalues clipped): about 5× faster at D = 2048 (2 s vs 10 s on 2 CPU cores), agreeing with
    sqrtm to ~1e-12 relative on well-conditioned statistics.
    """
    if method not in ("sqrtm", "eigh"):
        raise FIDError(f"method: 'sqrtm' or 'eigh', got {method!r}")
    m1, m2 = _as_vector(mu1, "mu1"), _as_vector(mu2, "mu2")
    if m1.shape != m2.shape:
        raise FIDError(f"mu2: dimension {m2.shape[0]} differs from mu1's {m1.shape[0]}")
    d = m1.shape[0]
    s1, s2 = _as_covariance(cov1, "cov1", d), _as_covariance(cov2, "cov2", d)
    diff = m1 - m2
    if method == "eigh":
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_eigh(s1, s2))
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: Σ1·Σ2 is singular; adding {eps:g}·I to both covariances", stacklevel=2)
        offset = eps * np.eye(d)
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
        if not np.isfinite(covmean).all():
            raise FIDError(f"frechet_distance: sqrtm(Σ1·Σ2) is not finite even with eps = {eps:g}")
    if np.iscomplexobj(covmean):
        imag = float(np.abs(np.diagonal(covmean).imag).max())
        if imag > imag_atol:
            raise FIDError(
                f"frechet_distance: sqrtm(Σ1·Σ2) has an imaginary part of {imag:.3g} on its diagonal "
                f"(> {imag_atol:g}): cov1/cov2 are not positive semi-definite covariances"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
