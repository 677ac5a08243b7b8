"""FID: the Fréchet distance against closed forms, the statistics format, the Inception pipeline, sharding."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncsn_fast.evaluation import frechet as frechetmod
from ncsn_fast.evaluation import inception as fidmod
from ncsn_fast.evaluation.frechet import FIDError, frechet_distance
from ncsn_fast.evaluation.inception import InceptionFeatures, inception_weights, random_inception_state
from ncsn_fast.evaluation.stats import GaussianStats, load_stats, save_stats

pytest.importorskip("pytorch_fid", reason="pytorch-fid is part of the test extra; install it with `.[test]`")


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
@pytest.mark.parametrize("zeros", [0, 12])
def test_commuting_covariances_match_the_closed_form(zeros, method):
    # Σ1 = U diag(a) Uᵀ, Σ2 = U diag(b) Uᵀ commute: FID = ‖μ1 − μ2‖² + Σ (√a − √b)²; with zeros: singular covariances
    rng = np.random.default_rng(1)
    d = 48
    u = _rotation(d, rng)
    a, b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    a[:zeros] = 0.0
    b[zeros // 2 : zeros + zeros // 2] = 0.0
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    exact = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = frechet_distance(mu1, u @ np.diag(a) @ u.T, mu2, u @ np.diag(b) @ u.T, method=method)
    assert got == pytest.approx(exact, rel=1e-6, abs=1e-6)


def test_non_commuting_2d_covariances_match_the_closed_form():
    # For 2×2 PSD matrices: Tr √(Σ1Σ2) = √(Tr(Σ1Σ2) + 2√(det Σ1 · det Σ2)) (eigenvalues λ1, λ2 ≥ 0 of Σ1Σ2)
    rng = np.random.default_rng(2)
    for _ in range(20):
        s1, s2 = _spd(2, rng), _spd(2, rng)
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
        exact = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_near_singular_2d_covariances():
    # rank one up to 1e-12: the closed form still holds (det → 0)
    rng = np.random.default_rng(3)
    v, w = rng.normal(size=2), rng.normal(size=2)
    s1 = np.outer(v, v) + 1e-12 * np.eye(2)
    s2 = np.outer(w, w) + 1e-12 * np.eye(2)
    tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(max(np.linalg.det(s1) * np.linalg.det(s2), 0.0)))
    exact = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(np.zeros(2) + 0.5, s1, np.zeros(2) + 0.5, s2) == pytest.approx(exact, rel=1e-6, abs=1e-9)


def test_agrees_with_pytorch_fid_on_feature_statistics():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(4)
    f1 = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    f2 = rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64)) + 0.3
    m1, s1, m2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-9)
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-8 * np.trace(s1)
    assert frechet_distance(m1, s1, m2, s2, method="eigh") == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-9)
    with pytest.raises(FIDError, match="method"):
        frechet_distance(m1, s1, m2, s2, method="svd")


def test_singular_product_falls_back_to_eps_regularization(monkeypatch):
    rng = np.random.default_rng(5)
    d, eps = 6, 1e-4
    u = _rotation(d, rng)
    a, b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    real_sqrtm = frechetmod._sqrtm
    calls = []

    def failing_once(m):
        calls.append(1)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(frechetmod, "_sqrtm", failing_once)
    with pytest.warns(UserWarning, match="singular"):
        got = frechet_distance(np.zeros(d), u @ np.diag(a) @ u.T, np.zeros(d), u @ np.diag(b) @ u.T, eps=eps)
    # the regularized covariances still commute: Tr √((Σ1 + εI)(Σ2 + εI)) = Σ √((a + ε)(b + ε))
    exact = a.sum() + b.sum() - 2 * np.sqrt((a + eps) * (b + eps)).sum()
    assert got == pytest.approx(exact, rel=1e-9) and len(calls) == 2


def test_not_positive_semidefinite_is_refused_with_the_imaginary_part():
    with pytest.raises(FIDError, match="imaginary part of 1"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize(
    "args,needle",
    [
        ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "mu2"),
        ((np.zeros(3), np.eye(4), np.zeros(3), np.eye(3)), "cov1"),
        ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), "mu1"),
        ((np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan)), "cov2"),
    ],
)
def test_bad_inputs_name_the_argument(args, needle):
    with pytest.raises(FIDError, match=needle):
        frechet_distance(*args)


# ---------------------------------------------------------------------------------------------------------------


def test_streamed_statistics_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(6)
    f = rng.normal(size=(257, 16)) * rng.uniform(0.1, 10, 16) + 100.0  # large offset: a naive E[x²] − E[x]² loses
    st = GaussianStats(16)
    for chunk in np.array_split(f, [1, 2, 50, 51, 200]):
        st.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(st.mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-9)
    a, b = GaussianStats(16).update(torch.from_numpy(f[:100])), GaussianStats(16).update(torch.from_numpy(f[100:]))
    np.testing.assert_allclose(a.merge(b).cov, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(FIDError, match="features"):
        st.update(torch.full((2, 16), float("nan")))
    with pytest.raises(FIDError, match="at least 2"):
        GaussianStats(16).update(torch.ones(1, 16)).cov  # noqa: B018


def _reduce_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    f = torch.from_numpy(np.random.default_rng(7).normal(size=(90, 8)) * 3 + 1)
    part = f[:25] if rank == 0 else f[25:]  # unequal shards
    st = GaussianStats(8).update(part).all_reduce()
    torch.save({"mu": torch.from_numpy(st.mu), "sigma": torch.from_numpy(st.cov), "n": st.n}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_all_reduce_over_two_processes_equals_all_the_features(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_reduce_worker, args=(2, port, str(tmp_path / "r")), nprocs=2, join=True)
    f = np.random.default_rng(7).normal(size=(90, 8)) * 3 + 1
    for rank in (0, 1):
        r = torch.load(tmp_path / f"r.{rank}", weights_only=True)
        assert r["n"] == 90
        np.testing.assert_allclose(r["mu"].numpy(), f.mean(0), rtol=1e-12)
        np.testing.assert_allclose(r["sigma"].numpy(), np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)


def test_statistics_file_round_trip_in_the_ttur_format(tmp_path):
    rng = np.random.default_rng(8)
    f = rng.normal(size=(40, 10))
    mu, sigma = f.mean(0), np.cov(f, rowvar=False)
    path = save_stats(tmp_path / "s.npz", mu, sigma, {"n": 40, "weights": "x"})
    m2, s2, protocol = load_stats(path)
    assert np.array_equal(m2, mu) and np.array_equal(s2, sigma) and protocol == {"n": 40, "weights": "x"}
    with np.load(path, allow_pickle=False) as raw:  # what TTUR and pytorch-fid read
        assert raw["mu"].dtype == np.float64 and np.array_equal(raw["sigma"], sigma)
    np.savez(tmp_path / "ttur.npz", mu=mu, sigma=sigma)  # a published file: no protocol
    assert load_stats(tmp_path / "ttur.npz")[2] is None
    assert list(tmp_path.glob(".*tmp")) == []


def test_statistics_file_errors_and_no_torn_file(tmp_path, monkeypatch):
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(FIDError, match="'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(FIDError, match="no such file"):
        load_stats(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(FIDError, match="cannot read"):
        load_stats(tmp_path / "text.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(FIDError, match="sigma"):
        load_stats(tmp_path / "shape.npz")
    with pytest.raises(FIDError, match=".npz"):
        save_stats(tmp_path / "s.txt", np.zeros(2), np.eye(2))

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_stats(tmp_path / "out.npz", np.zeros(2), np.eye(2))
    assert not (tmp_path / "out.npz").exists() and list(tmp_path.glob(".*")) == []


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    return InceptionFeatures(random_inception_state(0), {"weights": "random"})


def test_feature_pipeline_resizes_to_299_and_scales_to_minus_one_one(random_inception):
    seen = []
    first_conv = random_inception.net.blocks[0][0]
    handle = first_conv.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    try:
        x = torch.rand(3, 3, 20, 28)
        feats = random_inception(x)
        gray = torch.rand(2, 1, 16, 16)
        random_inception(gray)
    finally:
        handle.remove()
    # independent: 8-bit levels as a PNG stores them, bilinear resize (align_corners=False), [0, 1] → [-1, 1]
    q = torch.floor(x * 255 + 0.5) / 255
    expected = 2 * F.interpolate(q, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert seen[0].shape == (3, 3, 299, 299)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)
    qg = torch.floor(gray * 255 + 0.5) / 255
    expected_g = 2 * F.interpolate(qg.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear") - 1
    torch.testing.assert_close(seen[1], expected_g, rtol=0, atol=1e-6)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-3  # different images, different features
    one_by_one = torch.cat([random_inception(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(one_by_one, feats, rtol=1e-4, atol=1e-4)
    random_inception.chunk = 2  # large sampling batches go through the network in chunks
    try:
        torch.testing.assert_close(random_inception(x), feats, rtol=1e-4, atol=1e-4)
    finally:
        random_inception.chunk = 200
    as_uint8 = random_inception(torch.floor(x * 255 + 0.5).to(torch.uint8))
    torch.testing.assert_close(as_uint8, feats, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad,needle",
    [(torch.rand(2, 3, 8, 8) * 2, r"\[0, 1\]"), (torch.rand(2, 2, 8, 8), "1 or 3"), (torch.rand(3, 8, 8), "images")],
)
def test_feature_pipeline_rejects_bad_images(random_inception, bad, needle):
    with pytest.raises(FIDError, match=needle):
        random_inception(bad)


def test_weights_file_loading_and_its_hash(tmp_path):
    state = random_inception_state(1)
    torch.save(state, tmp_path / "w.pth")
    loaded, info = inception_weights(tmp_path / "w.pth")
    assert info["sha256"] == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    assert info["standard"] is False and info["weights"] == "w.pth"
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = fidmod.load_inception(tmp_path / "w.pth")
    assert any("not comparable" in str(x.message) for x in w) and net.protocol()["sha256"] == info["sha256"]
    with pytest.raises(FIDError, match="no such file"):
        inception_weights(tmp_path / "none.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(FIDError, match="state dict"):
        inception_weights(tmp_path / "list.pth")
    torch.save({"conv.weight": torch.ones(2)}, tmp_path / "other.pth")
    with pytest.raises(FIDError, match="not FID Inception weights"):
        InceptionFeatures(*inception_weights(tmp_path / "other.pth"))


def test_in_memory_pipeline_equals_pytorch_fids_png_pipeline(random_inception, tmp_path):
    # The official code saved samples as PNG and ran pytorch-fid on the files; we quantize in memory instead.
    from pytorch_fid.fid_score import calculate_activation_statistics
    from torchvision.utils import save_image

    x = torch.rand(6, 1, 12, 12)  # grayscale, as the digits model: PIL's convert("RGB") on one side, ours on the other
    files = []
    for i, im in enumerate(x):
        save_image(im, tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    mu_ref, sigma_ref = calculate_activation_statistics(files, random_inception.net, batch_size=3, num_workers=0)
    st = fidmod.feature_stats(x.split(4), random_inception)
    np.testing.assert_allclose(st.mu, mu_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.cov, sigma_ref, rtol=1e-4, atol=1e-7)


def test_our_network_is_pytorch_fids_own_network(random_inception):
    """fid_inception_network assembles pytorch-fid's modules without its download; the truth is pytorch-fid's own
    InceptionV3 built here the only way it can be offline: its URL loader pointed at the same state dict."""
    from unittest import mock

    from pytorch_fid import inception as pfi

    state = random_inception_state(0)
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
        theirs = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    ours = fidmod.fid_inception_network(state)
    assert type(ours) is pfi.InceptionV3
    assert [k for k, _ in ours.state_dict().items()] == [k for k, _ in theirs.state_dict().items()]
    x = torch.rand(2, 3, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=0, atol=0)
