from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.checkpoint import save_checkpoint


def tiny_checkpoint(path, seed: int):
    """A random 16 px NCSNv2 (ngf 4, L = 3): seconds to sample on a CPU."""
    cfg = nf.load_config("digits")
    cfg.model.ngf = 4
    cfg.model.num_classes = 3
    cfg.model.sigma_begin, cfg.model.sigma_end = 1.0, 0.1
    torch.manual_seed(seed)
    model = nf.build_model(cfg)
    return save_checkpoint(path, model=model.state_dict(), config=cfg.to_dict(), step=seed)


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return [tiny_checkpoint(d / f"checkpoint_{s}.pth", s) for s in (100, 200)]
