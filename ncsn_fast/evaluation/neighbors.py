"""Nearest training images of samples (Appendix C.5.2): is the model copying its data?

Distances are Euclidean in a feature space: the FID Inception's pool3 features when its weights are at hand,
otherwise pixels. Every training image is also considered flipped left-right (the paper trains with random flips,
so a flipped copy is as much a copy), and the grid shows the match as it was matched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ncsn_fast.validation import check_int


@dataclass
class Neighbors:
    index: torch.Tensor  # (S, k) positions in the training set, nearest first
    flipped: torch.Tensor  # (S, k) bool: the match is the left-right flipped training image
    distance: torch.Tensor  # (S, k) float64 Euclidean distance in feature space

    def to_dict(self) -> list[list[dict]]:
        return [
            [
                {"index": int(i), "flipped": bool(f), "distance": float(d)}
                for i, f, d in zip(self.index[s], self.flipped[s], self.distance[s], strict=True)
            ]
            for s in range(self.index.shape[0])
        ]


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).double()


def nearest_neighbors(
    samples: torch.Tensor,
    data: Iterable[torch.Tensor],
    features: Callable[[torch.Tensor], torch.Tensor] = pixel_features,
    k: int = 10,
    flips: bool = True,
) -> Neighbors:
    """The ``k`` nearest of ``data`` (an iterable of (B, C, H, W) batches, in order) to each sample.

    Streams over the data keeping a running top-k, so the training set is never held in memory (nor its
    features). With ``flips`` each image counts twice, as itself and flipped (``torch.flip(x, [-1])``).
    """
    check_int("k", k, 1)
    if samples.dim() != 4:
        raise ValueError(f"samples: expected (N, C, H, W), got shape {tuple(samples.shape)}")
    q = features(samples).double()
    s = q.shape[0]
    best_d = torch.empty(s, 0, dtype=torch.float64)
    best_i = torch.empty(s, 0, dtype=torch.long)
    best_f = torch.empty(s, 0, dtype=torch.bool)
    offset = 0
    for batch in data:
        if batch.shape[1:] != samples.shape[1:]:
            raise ValueError(
                f"data: images of shape {tuple(batch.shape[1:])} differ from the samples' {tuple(samples.shape[1:])}"
            )
        b = batch.shape[0]
        views = [(batch, False)] + ([(torch.flip(batch, [-1]), True)] if flips else [])
        for view, is_flip in views:
            # exact differences, not the ‖a‖² + ‖b‖² − 2ab shortcut: a planted copy must be at distance 0
            d = torch.cdist(q, features(view).double(), compute_mode="donot_use_mm_for_euclid_dist")
            best_d = torch.cat([best_d, d], 1)
            best_i = torch.cat([best_i, torch.arange(offset, offset + b).expand(s, b)], 1)
            best_f = torch.cat([best_f, torch.full((s, b), is_flip)], 1)
        # stable sort: at equal distances the original beats its flip and earlier images beat later ones
        order = torch.sort(best_d, dim=1, stable=True).indices[:, :k]
        best_d, best_i, best_f = best_d.gather(1, order), best_i.gather(1, order), best_f.gather(1, order)
        offset += b
    if offset == 0:
        raise ValueError("data: no training images")
    return Neighbors(best_i, best_f, best_d)


def neighbor_grid(samples: torch.Tensor, dataset_image: Callable[[int], torch.Tensor], nb: Neighbors) -> torch.Tensor:
    """Rows of [sample, nearest, 2nd nearest, ...]; flipped matches shown flipped. Returns (S·(k+1), C, H, W)."""
    rows = []
    for s in range(samples.shape[0]):
        rows.append(samples[s])
        for i, f in zip(nb.index[s].tolist(), nb.flipped[s].tolist(), strict=True):
            img = dataset_image(i)
            rows.append(torch.flip(img, [-1]) if f else img)
    return torch.stack(rows)


def neighbors(
    samples: torch.Tensor,
    dataset: torch.utils.data.Dataset,
    k: int = 10,
    features: Callable[[torch.Tensor], torch.Tensor] = pixel_features,
    flips: bool = True,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[Neighbors, torch.Tensor]:
    """The ``k`` nearest training images of each sample (N, C, H, W) in [0, 1], and the grid of rows
    [sample, nearest, …] ((N·(k+1), C, H, W), flipped matches shown flipped). ``dataset`` yields images (C, H, W)
    in [0, 1] (or (image, label) pairs), streamed in batches of ``batch_size``."""
    from tqdm import tqdm

    from ncsn_fast.data import first_item

    check_int("batch_size", batch_size, 1)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=lambda items: torch.stack([first_item(it) for it in items]),
    )
    nb = nearest_neighbors(samples, tqdm(loader, desc="neighbors", disable=not progress), features, k, flips)
    return nb, neighbor_grid(samples, lambda i: first_item(dataset[i]), nb)
