"""The official ``--test`` mode: the DSM loss of checkpoints on held-out data (is the model overfitting?).

For each checkpoint between ``test.begin_ckpt`` and ``test.end_ckpt`` the annealed DSM loss (the training
objective, NCSNv2 Section 2) is averaged over the test split in batches of ``test.batch_size``; labels and noise
come from one seed, the same for every checkpoint, so differences between checkpoints are not sampling noise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ncsn_fast.validation import check_int

if TYPE_CHECKING:
    from ncsn_fast.config import Config


@torch.no_grad()
def test_loss(
    checkpoints: Sequence[tuple[int, str | os.PathLike]],
    config: str | os.PathLike | Config | None = None,
    data: torch.utils.data.Dataset | torch.Tensor | None = None,
    data_root: str | os.PathLike | None = None,
    batch_size: int | None = None,
    n: int | None = None,
    ema: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """[{"step", "ckpt", "loss", "n"}] for each (step, checkpoint): the mean DSM loss over ``data`` (default: the
    config's test split under ``data_root``; the digits have no test split: pass ``data``), in batches of
    ``batch_size`` (default ``test.batch_size``), on its first ``n`` images when given."""
    from tqdm import tqdm

    from ncsn_fast.data import build_dataset, data_transform, first_item
    from ncsn_fast.losses import dsm_loss
    from ncsn_fast.pretrained import load_model
    from ncsn_fast.seeding import make_generator
    from ncsn_fast.techniques import get_sigmas

    if not checkpoints:
        raise ValueError("checkpoints: none to evaluate")
    rows = []
    for step, path in checkpoints:
        model, cfg, _ = load_model(path, config, ema=ema, device=device)
        dataset = data if data is not None else build_dataset(cfg, data_root, split="test")
        if isinstance(dataset, torch.Tensor):
            dataset = torch.utils.data.TensorDataset(dataset)
        count = len(dataset) if n is None else min(check_int("n", n, 1), len(dataset))
        size = check_int("batch_size", batch_size or cfg.test.batch_size, 1)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, range(count)), batch_size=size, shuffle=False,
            collate_fn=lambda items: torch.stack([first_item(it) for it in items]),
        )  # fmt: skip
        sigmas = get_sigmas(cfg).to(device)
        gen = make_generator(seed, "test_loss")  # the same labels and noise for every checkpoint
        total, seen = 0.0, 0
        for x in tqdm(loader, desc=f"test loss {step}", disable=not progress, leave=False):
            x = data_transform(cfg, x.float(), gen)
            labels = torch.randint(0, len(sigmas), (len(x),), generator=gen)
            z = torch.randn(x.shape, generator=gen)
            per = dsm_loss(model, x.to(device), sigmas, labels.to(device), z.to(device), cfg.training.anneal_power,
                           reduction="none")  # fmt: skip
            total += float(per.double().sum())
            seen += len(x)
        rows.append({"step": step, "ckpt": str(path), "loss": total / seen, "n": seen})
    return rows
