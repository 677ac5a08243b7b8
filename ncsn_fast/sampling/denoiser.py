"""The denoiser interface of Karras et al. 2022 and k-diffusion: D(x, σ) = x + σ²·s(x, σ).

By Tweedie's formula, for data blurred by N(0, σ²I) the score s(x, σ) = ∇ log p_σ(x) gives the posterior mean of
the clean data, E[x_0 | x] = x + σ²·s(x, σ). k-diffusion's samplers take such a D (``sample_dpmpp_2m(model, x,
sigmas)`` calls ``model(x, sigma * s_in)`` with σ of shape (N,)), so ``Denoiser(model)`` lets any of them run on
NCSNv2 weights:

    import k_diffusion as K
    from ncsn_fast import load_pretrained
    from ncsn_fast.sampling import Denoiser
    model, cfg = load_pretrained("digits")
    sigmas = K.sampling.get_sigmas_karras(25, cfg.model.sigma_end, cfg.model.sigma_begin)
    x = K.sampling.sample_dpmpp_2m(Denoiser(model), torch.randn(16, 1, 16, 16) * sigmas[0], sigmas)
"""

from __future__ import annotations

import torch
from torch import nn

from ncsn_fast.validation import check_batch


class Denoiser(nn.Module):
    """D(x, σ) = x + σ²·s(x, σ) of an ncsn-fast model (or any module with ``score(x, sigma)``).

    ``x`` (N, C, H, W) in the model's data space; ``sigma`` a float or a tensor of shape (N,) (or broadcastable),
    noise levels > 0 (σ-continuous NCSNv2 models take any; the original NCSN only its own levels and raises
    ValueError otherwise). Returns the denoised estimate, x's shape and dtype.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "score"):
            raise TypeError(f"model: needs a score(x, sigma) method, got {type(model).__name__}")
        self.inner_model = model  # k-diffusion's wrappers keep the network under this name too

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        check_batch("x", x)  # the model's score checks the rest, naming x too
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        s = self.inner_model.score(x, sigma)
        return x + sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype) ** 2 * s.to(x.dtype)
