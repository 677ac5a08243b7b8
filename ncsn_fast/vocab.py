"""The shared vocabulary, defined once and importable without torch (the command line's --help stays fast)."""

PRECISION_NAMES = ("fp32", "bf16", "fp16")
"""Network precisions: fp32, or bf16/fp16 (see :mod:`ncsn_fast.precision`)."""

OP_BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
"""Backends of the fused ops (see :mod:`ncsn_fast.ops._backend`)."""

SAMPLER_BACKENDS = (*OP_BACKENDS, "torch")
"""Backends of a sampling run: the ops backends, plus ``torch`` — the official computation and noise stream."""

SAMPLER_OPTIONS = {
    "ald": ("n_steps_each", "step_lr", "denoise"),
    "cas": ("eta", "denoise"),
    "pc": ("snr",),
    "heun": ("rho", "churn"),
    "euler": ("rho",),
    "dpmpp_2m": ("rho",),
    "dpmpp_2m_sde": ("rho", "eta"),
    "adaptive": ("rel_tol", "abs_tol", "denoise"),
}
"""Each registered sampler and the options of it that a sampling plan sets (``SamplingPlan``'s ``n_steps_each``,
``step_lr``, ``denoise`` and ``options``), each a keyword parameter of the sampler (a test holds this against the
signatures in :mod:`ncsn_fast.sampling.registry`). The command line's checks and help text are made from it."""
