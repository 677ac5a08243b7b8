"""Wrote inpaint_before_inverse.pt with the code before the inverse-problem mechanism (commit 5b1b84c): today's
inpaint outputs, which tests/sampling/test_inverse.py holds the re-expressed inpaint to, bit for bit. Kept as the
record of how they were made; running it again with the new code proves nothing."""

import torch

from ncsn_fast.sampling import inpaint

mu, s2 = 0.3, 0.25
sig = torch.tensor([3.0 * 0.6**i for i in range(8)])


def score64(x, y):
    return (mu - x) / (s2 + sig.double()[y].view(-1, 1, 1, 1) ** 2)


def score32(x, y):
    return (mu - x) / (s2 + sig[y].view(-1, 1, 1, 1) ** 2)


def gen(seed):
    return torch.Generator().manual_seed(seed)


g = gen(0)
data = torch.rand(1, 5, 7, generator=g, dtype=torch.float64)
mask = (torch.rand(1, 5, 7, generator=g) > 0.6).double()
soft = torch.rand(1, 5, 7, generator=g, dtype=torch.float64)  # a non-binary mask: the API allows it
x0 = torch.rand(6, 1, 5, 7, generator=g, dtype=torch.float64)
f32 = (x0.float(), data.float(), mask.float(), sig)
out = {
    "torch64": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1), restore_known=False),
    "torch64_restore": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1)),
    "torch64_soft": inpaint(score64, x0, data, soft, sig.double(), 2, 1e-3, denoise=False, generator=gen(2)),
    "fused32": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="cpu", seed=11, restore_known=False),
    "fused32_ref": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="reference"),
}
inputs = dict(data=data, mask=mask, soft=soft, x0=x0)
torch.save({"inputs": inputs, "outputs": out}, "tests/sampling/data/inpaint_before_inverse.pt")
