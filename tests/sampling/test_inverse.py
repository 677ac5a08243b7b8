"""Linear inverse problems by one mechanism (ncsn_fast.sampling.inverse): inpainting re-expressed through it gives
today's outputs bit for bit; colorization and super-resolution keep their observation exactly and, on Gaussian
data, sample the unknown component's closed-form conditional."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ncsn_fast.sampling import inpaint

DATA = Path(__file__).parent / "data"


def test_inpainting_through_the_mechanism_is_bit_identical_to_before():
    """inpaint_before_inverse.pt holds the outputs of the inpaint of commit 5b1b84c (before the mechanism), made by
    data/make_inpaint_before_inverse.py: the official update (float64, 0/1 mask, restore or not, a non-binary mask
    without denoising) and the fused op (float32, cpu and reference backends)."""
    rec = torch.load(DATA / "inpaint_before_inverse.pt")
    data, mask, soft, x0 = (rec["inputs"][k] for k in ("data", "mask", "soft", "x0"))
    mu, s2 = 0.3, 0.25
    sig = torch.tensor([3.0 * 0.6**i for i in range(8)])

    def score64(x, y):
        return (mu - x) / (s2 + sig.double()[y].view(-1, 1, 1, 1) ** 2)

    def score32(x, y):
        return (mu - x) / (s2 + sig[y].view(-1, 1, 1, 1) ** 2)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    f32 = (x0.float(), data.float(), mask.float(), sig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the schedule is coarse on purpose (a short run)
        now = {
            "torch64": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1), restore_known=False),
            "torch64_restore": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1)),
            "torch64_soft": inpaint(score64, x0, data, soft, sig.double(), 2, 1e-3, denoise=False, generator=gen(2)),
            "fused32": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="cpu", seed=11, restore_known=False),
            "fused32_ref": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="reference"),
        }
    for key, expected in rec["outputs"].items():
        assert now[key].dtype == expected.dtype and torch.equal(now[key], expected), key
