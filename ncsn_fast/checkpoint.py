"""Checkpoints: the official list format and the library's own dict format, always ``weights_only=True``.

Official: ``torch.save([model_state, optimizer_state, epoch, step, ema_shadow])`` with ``module.``-prefixed
model keys (saved from nn.DataParallel); the original NCSN code (ermongroup/ncsn) saves ``[model_state,
optimizer_state]``. Ours: a dict ``{"format": "ncsn_fast", "model", "ema", "optimizer",
"step", "config", "rng", ...}`` written atomically (temporary file, fsync, rename). Keys saved from wrapped
models (``module.`` of DataParallel/DDP, ``_orig_mod.`` of ``torch.compile``, in any order) are normalised for
the model and the EMA alike (:func:`strip_wrapper_prefixes`); optimizer state is keyed by parameter position and
needs no normalising.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ncsn_fast.ema import unwrap_model
from ncsn_fast.io import atomic_write

FORMAT = "ncsn_fast"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # nn.DataParallel / DistributedDataParallel, torch.compile

V = TypeVar("V")


class CheckpointError(ValueError):
    """The file is not a checkpoint, is damaged, or holds another architecture; the message says which."""


def strip_wrapper_prefixes(state: Mapping[str, V]) -> dict[str, V]:
    """The keys as the bare model names them: every leading ``module.`` and ``_orig_mod.`` removed, in any order
    and number (``module._orig_mod.x``, ``_orig_mod.module.x``, ``module.module.x`` → ``x``)."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        out[key] = value
    return out


def _unpickler_detail(exc: Exception) -> str:
    """The WeightsUnpickler's own reason (e.g. 'Unsupported operand 154'), without PyTorch's advice around it."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    rest = text[text.index(marker) + len(marker) :] if marker in text else text
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first.split(" was not an allowed global")[0][:160]


SAFETENSORS_WEIGHTS = "model.safetensors"  # in a save_pretrained directory: EMA weights by default
SAFETENSORS_RAW = "model_raw.safetensors"  # optional: the raw (non-EMA) weights
PRETRAINED_CONFIG = "config.yaml"


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A ``.safetensors`` file, or a :func:`~ncsn_fast.pretrained.save_pretrained` directory, in the dict form of
    :func:`read_checkpoint` (``config`` from the directory's config.yaml; ``weights`` from the file's metadata).
    No pickle is involved at all. CheckpointError naming the file for a truncated or foreign file."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    config = None
    if p.is_dir():
        cfg_path = p / PRETRAINED_CONFIG
        if not cfg_path.is_file():
            raise CheckpointError(
                f"checkpoint: the folder {str(p)!r} has {SAFETENSORS_WEIGHTS} but no {PRETRAINED_CONFIG} (name the "
                f"{SAFETENSORS_WEIGHTS} file itself, with its config)"
            )
        import yaml

        config = yaml.safe_load(cfg_path.read_text())
        p = p / SAFETENSORS_WEIGHTS
    if not p.is_file():
        raise CheckpointError(f"checkpoint: no such file {str(p)!r}")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r}: not a readable safetensors file (truncated?): {first[:160]}"
        ) from None
    step = meta.get("step")
    return {
        "format": "safetensors",
        "model": strip_wrapper_prefixes(state),
        "ema": None,
        "weights": meta.get("weights", "raw"),
        "step": int(step) if step and step.isdigit() else None,
        "config": config,
    }


def is_safetensors(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" or (p.is_dir() and (p / SAFETENSORS_WEIGHTS).is_file())


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint into the library's dict form: official lists are converted; ``.safetensors`` files and
    save_pretrained directories are read without pickle (:func:`read_safetensors`).

    Raises :class:`CheckpointError` for a missing file, a file that is not a PyTorch checkpoint, one that holds
    Python objects other than tensors and plain containers (refused: ``weights_only=True`` is never turned off), a
    truncated file, or a list/dict without model weights.
    """
    p = Path(path)
    if is_safetensors(p):
        return read_safetensors(p)
    if p.is_dir():
        raise CheckpointError(f"checkpoint: {str(p)!r} is a folder, not a checkpoint file")
    if not p.is_file():
        raise CheckpointError(f"checkpoint: no such file {str(p)!r}")
    with open(p, "rb") as f:
        head = f.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip, or the legacy pickle format
        raise CheckpointError(
            f"checkpoint {str(p)!r}: refused to load: not a PyTorch checkpoint (neither a zip nor a pickle)"
        )
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "Unsupported global" in detail:
            raise CheckpointError(
                f"checkpoint {str(p)!r}: refused to load: it holds Python objects other than tensors and plain "
                f"containers ({detail}); ncsn-fast only loads weights (weights_only=True)"
            ) from None
        raise CheckpointError(f"checkpoint {str(p)!r}: refused to load: not a PyTorch checkpoint ({detail})") from None
    except Exception as exc:  # torch raises many types for damaged files (KeyError, EOFError, RuntimeError...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r}: not a readable torch file (truncated or corrupt?): {first[:160]}"
        ) from None
    return normalize_checkpoint(raw, str(p))


def _tensor_dict(value: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return strip_wrapper_prefixes(value)
    return None


def normalize_checkpoint(raw: Any, where: str = "checkpoint") -> dict[str, Any]:
    """Any supported layout → ``{"format", "model", "ema", ...}`` with wrapper prefixes stripped."""
    if isinstance(raw, (list, tuple)):
        if len(raw) < 1 or not isinstance(raw[0], dict):
            raise CheckpointError(
                f"{where}: a list that is not the official [model_state, optimizer, epoch, step, ema] form"
            )
        return {
            "format": "ncsn_original" if len(raw) == 2 else "official",
            "model": strip_wrapper_prefixes(raw[0]),
            "optimizer": raw[1] if len(raw) > 1 else None,
            "epoch": raw[2] if len(raw) > 2 else None,
            "step": raw[3] if len(raw) > 3 else None,
            "ema": _tensor_dict(raw[4]) if len(raw) > 4 else None,
        }
    if isinstance(raw, dict):
        if raw.get("format") == FORMAT or "model" in raw:
            if not isinstance(raw.get("model"), Mapping):
                raise CheckpointError(f"{where}: its 'model' entry is not a state dict")
            out = dict(raw)
            out["model"] = strip_wrapper_prefixes(raw["model"])
            out["ema"] = _tensor_dict(raw.get("ema"))
            return out
        bare = _tensor_dict(raw)
        if bare is not None:  # a bare state_dict
            return {"format": "state_dict", "model": bare, "ema": None}
    raise CheckpointError(f"{where}: not a checkpoint (got {type(raw).__name__} without model weights)")


def fitting_architecture(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """The registered architecture (``model.name``) whose parameter and buffer names are exactly those of ``state``
    (the σ buffer aside), for a model built from a config (``model.config``); None when none or several fit. Each
    candidate is built at ngf 2: names do not depend on the width."""
    import copy

    from ncsn_fast.models.registry import get_model_class, registered_models

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model"):
        return None
    names = {k for k in state if k != "sigmas"}
    fits = []
    for name in registered_models():
        probe = copy.deepcopy(config)
        probe.model.name, probe.model.ngf = name, 2
        try:
            keys = {k for k in get_model_class(name)(probe).state_dict() if k != "sigmas"}
        except Exception:  # noqa: BLE001 (a layout this config's sizes cannot build is simply no fit)
            continue
        if keys == names:
            fits.append(name)
    return fits[0] if len(fits) == 1 else None


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, skip: tuple[str, ...] = ()) -> None:
    expected = {k: v for k, v in unwrap_model(model).state_dict().items() if k not in skip}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:3])})")
        hint = ""
        fit = fitting_architecture(unwrap_model(model), state) if missing or unexpected else None
        if fit is not None:
            from ncsn_fast.models.registry import get_model_class

            hint = f"; it looks like {get_model_class(fit).__name__}: set model.name: {fit}"
        raise CheckpointError(
            f"{where} holds another architecture than {type(unwrap_model(model)).__name__}{hint}: " + "; ".join(parts)
        )


# ---------------------------------------------------------------------------------------------- the σ schedule
def describe_schedule(sigmas: torch.Tensor) -> str:
    s = [float(v) for v in sigmas.flatten()]
    return f"σ1 = {s[0]:.6g}, σL = {s[-1]:.6g}, L = {len(s)}"


def _same_schedule(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double().cpu(), b.double().cpu(), rtol=1e-5, atol=0.0))


def _schedule_fields(sigmas: torch.Tensor, where: str) -> dict[str, Any]:
    """The config fields (model.sigma_begin, sigma_end, num_classes, sigma_dist) that give ``sigmas``."""
    s = sigmas.double().flatten()
    fields: dict[str, Any] = {"sigma_begin": float(s[0]), "sigma_end": float(s[-1]), "num_classes": len(s)}
    if len(s) < 2:
        return {**fields, "sigma_dist": "geometric"}
    if torch.allclose(s.log().diff(), s.log().diff().mean().expand(len(s) - 1), rtol=1e-4, atol=1e-7):
        return {**fields, "sigma_dist": "geometric"}
    if torch.allclose(s.diff(), s.diff().mean().expand(len(s) - 1), rtol=1e-4, atol=1e-7):
        return {**fields, "sigma_dist": "uniform"}
    raise CheckpointError(f"{where}: its σ schedule ({describe_schedule(s)}) is neither geometric nor uniform")


def check_schedule(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, adopt: bool = False) -> None:
    """The checkpoint's ``sigmas`` buffer against the model's (built from the config): one source of truth.

    NCSNv2 models keep σ_1..σ_L as a buffer that ``model(x, label)`` divides by, while ``model.score(x, σ)``, the
    samplers and the step sizes take the config's schedule; a checkpoint trained with another schedule would make
    the two disagree. A mismatch raises :class:`CheckpointError` naming both schedules; with ``adopt`` the
    checkpoint's schedule replaces the config's everywhere (the model's buffer and ``model.config.model``, which is
    the config object the model was built from) with a warning.
    """
    target = unwrap_model(model)
    own, theirs = getattr(target, "sigmas", None), state.get("sigmas")
    if not isinstance(own, torch.Tensor) or not isinstance(theirs, torch.Tensor) or _same_schedule(own, theirs):
        return
    if not adopt:
        raise CheckpointError(
            f"{where} was trained with the σ schedule {describe_schedule(theirs)} but the config says "
            f"{describe_schedule(own)}: pass the config it was trained with, or adopt_schedule=True "
            "(--adopt-schedule) to use the checkpoint's schedule everywhere"
        )
    fields = _schedule_fields(theirs, where)
    config = getattr(target, "config", None)
    if config is not None:
        for key, value in fields.items():
            setattr(config.model, key, value)
    target.sigmas = theirs.detach().clone().to(own.device, own.dtype)
    warnings.warn(
        f"{where}: adopted the checkpoint's σ schedule {describe_schedule(theirs)} in place of the config's "
        f"{describe_schedule(own)}",
        stacklevel=3,
    )


def load_state(
    model: nn.Module,
    ckpt: Mapping[str, Any],
    where: str,
    ema: bool = True,
    adopt_schedule: bool = False,
) -> None:
    """Load a :func:`read_checkpoint` dict into ``model`` (strict); with ``ema=True`` the EMA weights replace the
    parameters (a checkpoint marked ``"weights": "ema"`` already holds them as its model weights).

    Raises :class:`CheckpointError` naming ``where`` for weights of another architecture (the first missing,
    unexpected and mismatched keys, and the ``model.name`` whose keys they are, :func:`fitting_architecture`), a σ
    schedule other than the model's (see :func:`check_schedule`) and EMA weights for unknown parameters."""
    target = unwrap_model(model)
    _check_keys(target, {k: v for k, v in ckpt["model"].items() if k != "sigmas"}, where, skip=("sigmas",))
    check_schedule(target, ckpt["model"], where, adopt_schedule)
    _check_keys(target, ckpt["model"], where)
    target.load_state_dict(ckpt["model"], strict=True)
    if not ema or ckpt.get("weights") == "ema":
        return
    shadow = ckpt.get("ema")
    if not shadow:
        warnings.warn(f"{where} has no EMA weights; using the raw weights", stacklevel=3)
        return
    params = dict(target.named_parameters())
    bad = [k for k in shadow if k not in params]
    if bad:
        raise CheckpointError(f"{where}: EMA weights for unknown parameters: {bad[:5]}")
    with torch.no_grad():
        for k, v in shadow.items():
            params[k].copy_(v)


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, ema: bool = True, adopt_schedule: bool = False
) -> dict[str, Any]:
    """Load weights into ``model`` (strict); with ``ema=True`` the EMA shadow replaces the parameters.

    Returns the checkpoint dict (step, optimizer, config ... when present). A checkpoint without EMA weights loads
    its raw weights when ``ema=True`` is asked, with a warning. A σ schedule other than the model's raises
    :class:`CheckpointError` unless ``adopt_schedule`` (see :func:`check_schedule`).
    """
    ckpt = read_checkpoint(path)
    load_state(model, ckpt, f"checkpoint {str(path)!r}", ema, adopt_schedule)
    return ckpt


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The training step in a ``checkpoint_<step>.pth`` name (None for other names)."""
    stem = Path(path).stem
    head, _, tail = stem.rpartition("_")
    return int(tail) if head == "checkpoint" and tail.isdigit() else None


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Write ``{"format": "ncsn_fast", **fields}`` atomically (:func:`ncsn_fast.io.atomic_write`)."""
    payload = {"format": FORMAT, **fields}
    return atomic_write(path, lambda f: torch.save(payload, f))


__all__ = [
    "CheckpointError",
    "check_schedule",
    "checkpoint_step",
    "describe_schedule",
    "fitting_architecture",
    "load_checkpoint",
    "load_state",
    "normalize_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "strip_wrapper_prefixes",
]
