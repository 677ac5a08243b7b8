"""Precisions: the one list of names (``fp32``, ``bf16``, ``fp16``) and what each means for a network call.

Training runs the network under :func:`autocast` in bf16/fp16 (float32 master weights). Inference (the samplers)
uses :func:`half_network` instead: a copy of the model whose weights are converted once, behind a float32 face
(the sampler state and update stay float32). ``fp32`` is plain float32. :func:`hardware_half` says whether the
device has bf16/fp16 units at all.
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


def hardware_half(device: torch.device | str, precision: str) -> bool | None:
    """Whether ``device`` computes convolutions and matmuls in ``precision`` natively: on a CPU, oneDNN's own test
    (AVX-512 BF16 / AMX for bf16; AVX-512 FP16 / AMX-FP16 for fp16) — without it bf16/fp16 are emulated and slower
    than float32; on CUDA, bf16 needs compute capability 8.0 (fp16 runs everywhere). None for fp32 or an unknown
    device type."""
    dtype = check_precision("precision", precision)
    device = torch.device(device)
    if dtype is None:
        return None
    if device.type == "cpu":
        ops = torch.ops.mkldnn
        return bool(ops._is_mkldnn_bf16_supported() if dtype == torch.bfloat16 else ops._is_mkldnn_fp16_supported())
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.get_device_capability(device)[0] >= 8
    return None


class HalfNetwork(torch.nn.Module):
    """A score network held in bf16/fp16 (weights converted once, activations channels-last) behind a float32
    face: ``net(x, y)`` and ``net.score(x, σ)`` take float32 images and return float32 scores. See
    :func:`half_network`."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.net, self.dtype, self.memory_format = net, dtype, memory_format

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.to(dtype=self.dtype, memory_format=self.memory_format)
        return x.to(self.dtype)

    @staticmethod
    def _out(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """float32 in x's layout (one copy: the samplers' fused updates want NCHW-contiguous scores)."""
        fmt = torch.contiguous_format if x.is_contiguous() else torch.preserve_format
        return out.to(dtype=torch.float32, memory_format=fmt)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._out(self.net(self._in(x), y), x)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self._out(self.net.score(self._in(x), sigma), x)


def half_network(
    model: torch.nn.Module, precision: str, memory_format: torch.memory_format = torch.channels_last
) -> torch.nn.Module:
    """For inference in bf16/fp16 without autocast: a copy of ``model`` with its weights converted to the
    precision once (autocast re-casts every weight on every call) and in ``memory_format`` (channels-last: what
    oneDNN and cuDNN convolve fastest), wrapped so that calls take and return float32 (:class:`HalfNetwork`).

    For ncsn-fast models the σ buffer stays float32 (``RefineNetScore._apply``), Technique 3 divides in float32
    and the fused InstanceNorm++ takes and returns bf16/fp16 with float32 statistics. The copy has no gradients
    (``requires_grad`` off: for sampling); ``model`` is left as it was. ``precision`` "fp32" returns ``model``
    itself. On a CPU without bf16/fp16 units (:func:`hardware_half` False) this works but is slower than fp32."""
    import copy

    dtype = check_precision("precision", precision)
    if dtype is None:
        return model
    device = next(model.parameters()).device
    warn_if_emulated(device, precision, stacklevel=3)
    net = copy.deepcopy(model).requires_grad_(False)
    net = net.to(dtype=dtype, memory_format=memory_format)
    return HalfNetwork(net, dtype, memory_format)


def warn_if_emulated(device: torch.device, precision: str, what: str = "", stacklevel: int = 2) -> bool:
    """Warn (RuntimeWarning, and return True) when ``precision`` runs emulated on this CPU (no bf16/fp16 matrix
    units: slower than fp32 here, ``what`` — e.g. ", compiled or not" — says of what)."""
    import warnings

    if device.type != "cpu" or hardware_half(device, precision) is not False:
        return False
    warnings.warn(
        f"{precision} on this CPU is emulated (no {precision} matrix units): slower than fp32 here{what} "
        "(ncsn-fast doctor)",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
    return True
