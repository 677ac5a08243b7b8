"""Exponential moving average of parameters (Technique 5), keyed like the official ``EMAHelper``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DataParallel / DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    """θ_ema ← μ·θ_ema + (1 − μ)·θ after each step (NCSNv2 Technique 5, μ = 0.999).

    The shadow is a dict ``name → tensor`` over the unwrapped model's trainable parameters, exactly the
    official ``ema_shadow`` (no ``module.`` prefix), so the two are interchangeable.
    """

    def __init__(self, model: nn.Module, mu: float = 0.999) -> None:
        if not 0.0 <= mu < 1.0:
            raise ValueError(f"mu: must be in [0, 1), got {mu}")
        self.mu = mu
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in unwrap_model(model).named_parameters() if p.requires_grad
        }

    def _params(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in unwrap_model(model).named_parameters():
            if p.requires_grad:
                if name not in self.shadow:
                    raise KeyError(f"EMA has no shadow for parameter {name!r}: was it built for another model?")
                yield name, p

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in self._params(model):
            self.shadow[name].lerp_(p.detach(), 1.0 - self.mu)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averaged ones."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Use the EMA weights inside the block, restore the raw ones after it."""
        backup = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in state.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA state {k!r}: shape {tuple(v.shape)} ≠ model's {tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v)
