"""Precisions: the one list of names (``fp32``, ``bf16``, ``fp16``) and what each means for a network call.

Networks run under :func:`autocast` in bf16/fp16 (training keeps float32 master weights; samplers keep their
state and update in float32); ``fp32`` is plain float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ncsn_fast.vocab import PRECISION_NAMES

PRECISIONS: dict[str, torch.dtype | None] = dict(
    zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16), strict=True)
)


def check_precision(name: str, value: str) -> torch.dtype | None:
    """The autocast dtype of ``value`` (None for fp32); a ValueError naming ``name`` for anything else."""
    if value not in PRECISIONS:
        raise ValueError(f"{name}: unknown precision {value!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[value]


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """``torch.autocast`` in the precision's dtype on ``device``'s type; nothing for fp32."""
    dtype = check_precision("precision", precision)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
