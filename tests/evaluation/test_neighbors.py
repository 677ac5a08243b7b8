"""Nearest neighbours find planted copies of training images, flipped or not (Appendix C.5.2)."""

from __future__ import annotations

import pytest
import torch

from ncsn_fast.evaluation.neighbors import nearest_neighbors, neighbor_grid, pixel_features


def _batches(x: torch.Tensor, b: int):
    return [x[i : i + b] for i in range(0, len(x), b)]


def _planted(n: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    train = torch.rand(n, 3, size, size, generator=g)
    samples = torch.stack([train[7], torch.flip(train[n - 3], [-1]), torch.rand(3, size, size, generator=g)])
    return train, samples


def test_planted_copy_and_flipped_copy_in_pixel_space():
    train, samples = _planted(40, 8, 0)
    nb = nearest_neighbors(samples, _batches(train, 16), pixel_features, k=5)  # the copies sit in different batches
    assert nb.index[0, 0] == 7 and not nb.flipped[0, 0] and nb.distance[0, 0] < 1e-12
    assert nb.index[1, 0] == 37 and nb.flipped[1, 0] and nb.distance[1, 0] < 1e-12
    assert nb.distance[2, 0] > 0.5  # fresh noise copies nothing
    assert (nb.distance[:, 1:] >= nb.distance[:, :-1]).all()
    # independent brute force over all 80 candidates
    cands = torch.cat([train, torch.flip(train, [-1])]).flatten(1).double()
    brute = torch.cdist(samples.flatten(1).double(), cands, compute_mode="donot_use_mm_for_euclid_dist").sort(1)
    torch.testing.assert_close(nb.distance, brute.values[:, :5])
    assert torch.equal(nb.index, brute.indices[:, :5] % 40) and torch.equal(nb.flipped, brute.indices[:, :5] >= 40)
    without = nearest_neighbors(samples, _batches(train, 16), pixel_features, k=1, flips=False)
    assert without.distance[1, 0] > 0.5  # the flipped copy is only found when flips are considered


def test_grid_shows_the_match_as_matched():
    train, samples = _planted(12, 6, 1)
    nb = nearest_neighbors(samples, [train], pixel_features, k=2)
    grid = neighbor_grid(samples, lambda i: train[i], nb)
    assert grid.shape == (9, 3, 6, 6)
    assert torch.equal(grid[1], samples[0]) and torch.equal(grid[4], samples[1])  # the flipped copy, shown flipped


def test_planted_copies_in_random_inception_feature_space():
    pytest.importorskip("pytorch_fid")
    from ncsn_fast.evaluation.inception import InceptionFeatures, random_inception_state

    net = InceptionFeatures(random_inception_state(0))
    train, samples = _planted(10, 16, 2)
    nb = nearest_neighbors(samples[:2], _batches(train, 4), net, k=3)
    assert nb.index[:, 0].tolist() == [7, 7] and nb.flipped[:, 0].tolist() == [False, True]
    assert (nb.distance[:, 0] < 1e-3 * nb.distance[:, 1]).all()


def test_bad_arguments():
    train, samples = _planted(10, 4, 3)
    with pytest.raises(ValueError, match="k: must be at least 1"):
        nearest_neighbors(samples, [train], k=0)
    with pytest.raises(ValueError, match="differ from the samples"):
        nearest_neighbors(samples, [train[:, :, :2]], k=1)
    with pytest.raises(ValueError, match="no training images"):
        nearest_neighbors(samples, [], k=1)
