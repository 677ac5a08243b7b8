from __future__ import annotations

import torch
from torch import nn

import ncsn_fast as nf


def test_update_formula_and_context_manager():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    ema = nf.EMA(model, mu=0.9)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    ema.update(model)
    for name, p in model.named_parameters():
        assert torch.allclose(ema.shadow[name], 0.9 * start[name] + 0.1 * p, atol=1e-6)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.average_parameters(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[name])
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])


def test_keys_unwrap_dataparallel_and_compile(reference_dir):
    cfg = nf.load_config(reference_dir / "ncsnv2_32" / "config.yml")
    model = nf.build_model(cfg)
    official = torch.load(reference_dir / "ncsnv2_32" / "checkpoint.pth", weights_only=True)[4]
    for wrapped in (model, nn.DataParallel(model), torch.compile(model)):
        ema = nf.EMA(wrapped)
        assert set(ema.state_dict()) == set(official)
    ema = nf.EMA(nn.DataParallel(model))
    ema.load_state_dict(official)
    ema.copy_to(torch.compile(model))
    for name, p in model.named_parameters():
        assert torch.equal(p, official[name])
