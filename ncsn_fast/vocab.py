"""The shared vocabulary, defined once and importable without torch (the command line's --help stays fast)."""

from ncsn_fast.sampler_specs import SPECS

PRECISION_NAMES = ("fp32", "bf16", "fp16")
"""Network precisions: fp32, or bf16/fp16 (see :mod:`ncsn_fast.precision`)."""

OP_BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
"""Backends of the fused ops (see :mod:`ncsn_fast.ops._backend`)."""

SAMPLER_BACKENDS = (*OP_BACKENDS, "torch")
"""Backends of a sampling run: the ops backends, plus ``torch`` — the official computation and noise stream."""

SAMPLER_OPTIONS = {name: spec.option_names for name, spec in SPECS.items()}
"""Each registered sampler and its keyword options (a view of :data:`ncsn_fast.sampler_specs.SPECS`, where each
sampler is declared once; a test holds the declarations against the signatures)."""
