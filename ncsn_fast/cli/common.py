"""What the commands share: options, the output checks done before any work, model loading, error mapping.

Nothing here imports torch at module level: ``ncsn-fast --help`` must answer without loading it.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ncsn_fast.vocab import PRECISION_NAMES, SAMPLER_BACKENDS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A user error found by the command line: one line on stderr, exit code 2."""


# Library parameter names → (the flag a user typed, its dest): applied when the command has that dest (the rest
# map by the rule x_y → --x-y).
FLAG_NAMES = {
    "n_steps_each": ("--steps", "steps"),
    "data_root": ("--data", "data"),
    "n_interpolations": ("--interpolate", "interpolate"),
    "checkpoints": ("--ckpts", "ckpts"),
    "checkpoint": ("--ckpt", "ckpt"),
    "path": ("--out", "out"),
    "directory": ("--out", "out"),
}


def to_flag(message: str, known: Iterable[str], names: dict[str, str] | None = None) -> str:
    """Rewrite a library error's leading ``name:`` to the command's flag (``n_steps_each:`` → ``--steps:``);
    ``names`` (a command's ``flag_names`` default) overrides the shared table, e.g. a positional's metavar."""
    m = re.match(r"^([a-z][a-z0-9_]*)(:| )", message)
    if not m:
        return message
    name = m.group(1)
    known = set(known)
    if names and name in names:
        return names[name] + message[len(name) :]
    if name in FLAG_NAMES and FLAG_NAMES[name][1] in known:
        return FLAG_NAMES[name][0] + message[len(name) :]
    if name in known:
        return "--" + name.replace("_", "-") + message[len(name) :]
    return message


def positive_int(flag: str, value: int | None, minimum: int = 1) -> None:
    """An optional integer flag ≥ minimum (the library's validator, named by the flag)."""
    from ncsn_fast.validation import check_int

    if value is not None:
        check_int(flag, value, minimum)


def positive_float(flag: str, value: float | None) -> None:
    from ncsn_fast.validation import check_positive

    if value is not None:
        check_positive(flag, value)


def check_device(flag: str, value: str) -> Any:
    from ncsn_fast.validation import check_device as check

    try:
        return check(flag, value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_dir(flag: str, folder: Path, target: Path) -> None:
    """Create, write and remove a probe file in the existing folder that will hold ``target``."""
    if not folder.is_dir():
        raise CommandError(f"{flag}: cannot write {str(target)!r}: {str(folder)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ncsn-fast-probe.", dir=folder)
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CommandError(f"{flag}: cannot write to {str(target)!r} ({exc.strerror or exc})") from None


def check_output_dir(flag: str, value: str | os.PathLike) -> Path:
    """An output folder that can be written — checked now, created only when something is written into it."""
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise CommandError(f"{flag}: {str(p)!r} exists and is a file, not a folder")
    _probe_dir(flag, p if p.is_dir() else _existing_ancestor(p), p)
    return p


def check_output_file(flag: str, value: str | os.PathLike, suffix: str | None = None) -> Path:
    """An output file that can be written (its folder is probed; an existing file will be replaced)."""
    p = Path(value)
    if suffix is not None and p.suffix.lower() != suffix:
        raise CommandError(f"{flag}: must end in {suffix}, got {str(value)!r}")
    if p.is_dir():
        raise CommandError(f"{flag}: {str(p)!r} is a folder; give a file name")
    _probe_dir(flag, p.parent if p.parent.is_dir() else _existing_ancestor(p.parent), p)
    return p


def check_input_file(flag: str, value: str | os.PathLike | None, suffixes: tuple[str, ...] = ()) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    if not p.exists():
        raise CommandError(f"{flag}: no such file {str(value)!r}")
    if p.is_dir():
        raise CommandError(f"{flag}: {str(value)!r} is a folder, not a file")
    if suffixes and p.suffix.lower() not in suffixes:
        raise CommandError(f"{flag}: {str(value)!r}: expected a {' or '.join(suffixes)} file")
    return p


def add_model_args(p: argparse.ArgumentParser, ckpt: bool = True) -> None:
    if ckpt:
        p.add_argument(
            "--ckpt",
            help="checkpoint file (official or ncsn-fast, .pth or .safetensors), a save_pretrained folder, or a "
            "training workdir or official run folder (its sampling.ckpt_id checkpoint, else the latest); default: the "
            "bundled digits model",
        )
    p.add_argument(
        "--config", help="preset name or YAML file (default: the checkpoint's own config, or a run folder's config.yml)"
    )
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument(
        "--adopt-schedule",
        action="store_true",
        help="when the checkpoint's σ schedule differs from the config's, use the checkpoint's (default: refuse)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (under torchrun: each rank its local GPU)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        choices=list(SAMPLER_BACKENDS),
        help="ops backend of the whole run, network and update (auto: the best for the device); 'torch': the "
        "official computation and torch.randn noise stream",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISION_NAMES),
        help="network precision (bf16/fp16: autocast; the sampler state and update stay float32)",
    )
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA only: replay the network from a CUDA graph")
    p.add_argument(
        "--compile",
        nargs="?",
        const="aot",
        default=None,
        choices=["jit", "aot"],
        help="compile the network: aot (the default of a bare --compile: Inductor with frozen weights, an "
        "AOTInductor package per batch size cached under $NCSN_FAST_CACHE_DIR or ~/.cache/ncsn-fast; the first run "
        "compiles, later runs load it) or jit (torch.compile in this process, compiled again by every run: on a CPU it "
        "runs eager, saying why); see ncsn_fast.inference.compile_pays",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_model(args: argparse.Namespace, device: Any, ckpt: str | None = None) -> tuple[Any, Any]:
    """(model on device in eval mode, config) from --config/--ckpt (config checked first); prints which
    checkpoint a folder resolved to."""
    from ncsn_fast.pretrained import load_model as load

    ckpt = getattr(args, "ckpt", None) if ckpt is None else ckpt
    model, cfg, path = load(ckpt, args.config, ema=not args.no_ema, device=device, adopt_schedule=args.adopt_schedule)
    if ckpt is not None and Path(ckpt).is_dir() and Path(ckpt).resolve() != path.resolve():
        print(f"--ckpt: using {path}")
    import torch

    # channels_last: 1.8× faster convolutions on this CPU for the bundled model (1.08 vs 1.89 s, 36 samples, 10 evals)
    return model.to(memory_format=torch.channels_last), cfg


def sampling_plan(args: argparse.Namespace, **extra: Any) -> Any:
    from ncsn_fast.sampling import SamplingPlan

    options = dict(getattr(args, "recommended_options", None) or {})
    from ncsn_fast.sampler_specs import PLAN_FIELDS, cli_options

    flags = [name for name in cli_options() if name not in PLAN_FIELDS]
    options.update({k: getattr(args, k) for k in flags if getattr(args, k, None) is not None})
    plan = SamplingPlan(
        sampler=getattr(args, "sampler", None) or "ald",
        nfe=getattr(args, "nfe", None),
        n_steps_each=getattr(args, "steps", None),
        step_lr=getattr(args, "step_lr", None),
        denoise=getattr(args, "denoise", None),
        seed=args.seed,
        precision=args.precision,
        backend=args.backend,
        cuda_graphs=args.cuda_graphs,
        compile=getattr(args, "compile", None) or False,
        options=options,
        model_source=getattr(args, "ckpt", None),
        ema=not getattr(args, "no_ema", False),
        **extra,
    )
    for flag in ("inpaint", "interpolate"):
        if plan.compile and getattr(args, flag, None):
            raise CommandError(f"--compile: compiles the sampling of new images, not --{flag}")
    try:
        plan = plan.check()
    except (ValueError, TypeError) as exc:
        raise CommandError(to_flag(str(exc), vars(args), getattr(args, "flag_names", None))) from None
    from ncsn_fast.sampling.generate import compile_mode

    try:
        _, runs, _ = compile_mode(plan, getattr(args, "device", None) or "cpu")
    except RuntimeError:  # a malformed --device: its own check names it later
        runs = None
    if runs == "aot":  # a cache folder that cannot be made: said now, not after loading the model
        from ncsn_fast.inference import check_cache_dir

        try:
            check_cache_dir(writable=False)
        except ValueError as exc:
            raise CommandError(f"--compile: {exc}") from None
    return plan
