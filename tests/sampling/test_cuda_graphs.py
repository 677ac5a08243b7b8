"""CUDA graphs for every sampler: the network is captured once and replayed, never silently run eagerly.

A graphed run and an eager fallback give the same samples, so the GPU test asserts on what GraphedNetwork counted
(captures, replays, fallback). On the CPU the same assertion is run against a stand-in capture that succeeds and one
that fails (the fallback must fail it), and model.score is run as if captured with host reads forbidden.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.models import refinenet
from ncsn_fast.sampling import get_sampler, minimum_nfe, runtime
from tests.conftest import rel_err

SAMPLERS = ["ald", "cas", "pc", "heun", "euler", "dpmpp_2m", "dpmpp_2m_sde", "adaptive"]


def tiny_model(name: str = "ncsnv2"):
    cfg = nf.load_config(
        {"data": {"image_size": 16, "channels": 1}, "model": {"name": name, "ngf": 8, "num_classes": 6}}
    )
    torch.manual_seed(3)
    return nf.build_model(cfg).eval(), nf.get_sigmas(cfg)


def record_graphed_networks(monkeypatch) -> list[runtime.GraphedNetwork]:
    """Every GraphedNetwork the runs below build, to inspect after."""
    made: list[runtime.GraphedNetwork] = []

    class Recording(runtime.GraphedNetwork):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(runtime, "GraphedNetwork", Recording)
    return made


def assert_captured_and_replayed(made: list[runtime.GraphedNetwork]) -> None:
    assert made, "cuda_graphs=True built no graphed network"
    for net in made:
        assert net.fallback is None, f"CUDA graph capture failed and the run fell back to eager: {net.fallback}"
        assert net.captures >= 1 and net.replays >= 2, f"captures {net.captures}, replays {net.replays}"


def sample(name: str, score, x0: torch.Tensor, **kw) -> torch.Tensor:
    nfe = max(minimum_nfe(name), 8)
    with torch.no_grad():
        return get_sampler(name)(score, x0, nfe, 1.0, 0.01, None, seed=3, **kw)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("name", SAMPLERS)
def test_cuda_graphs_capture_and_replay_every_sampler(name, monkeypatch):
    model, _ = tiny_model()
    model = model.cuda()
    x0 = torch.rand(4, 1, 16, 16, device="cuda")
    eager = sample(name, model.score, x0)
    made = record_graphed_networks(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the capture-failed warning is a failure here, not a note
        graphed = sample(name, model.score, x0, cuda_graphs=True)
    assert_captured_and_replayed(made)
    assert rel_err(graphed, eager) <= 1e-5


class StandInCapture:
    """_GraphedScore on the CPU: 'captures' by keeping the network, 'replays' by calling it."""

    def __init__(self, score, x, y) -> None:
        self.score = score

    def __call__(self, x, y):
        return self.score(x, y)


class FailedCapture:
    def __init__(self, score, x, y) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize("name", ["heun", "ald"])
@pytest.mark.parametrize("capture", [StandInCapture, FailedCapture])
def test_the_graph_assertion_catches_an_eager_fallback(name, capture, monkeypatch):
    monkeypatch.setattr(runtime.GraphedNetwork, "_require_cuda", staticmethod(lambda device: None))
    monkeypatch.setattr(runtime, "_GraphedScore", capture)
    made = record_graphed_networks(monkeypatch)
    model, _ = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample(name, model.score, torch.rand(2, 1, 16, 16), cuda_graphs=True)
    if capture is FailedCapture:
        with pytest.raises(AssertionError, match="fell back to eager: RuntimeError: operation not permitted"):
            assert_captured_and_replayed(made)
    else:
        assert_captured_and_replayed(made)


def host_reads_forbidden(monkeypatch) -> None:
    def sync(*args):
        raise AssertionError("device-to-host read inside a CUDA graph capture")

    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, sync)


@pytest.mark.parametrize("name", ["ncsnv2", "ncsn"])
def test_model_score_neither_syncs_nor_copies_from_the_host_while_captured(name, monkeypatch):
    model, sigmas = tiny_model(name)
    x, sigma = torch.rand(2, 1, 16, 16), sigmas[[0, 3]].float()
    with torch.no_grad():
        want = model.score(x, sigma)  # outside a capture: σ checked, the NCSN level table made once
        monkeypatch.setattr(refinenet, "_capturing", lambda x: True)
        monkeypatch.setattr(refinenet, "get_sigmas", lambda config: pytest.fail("σ table rebuilt on the host"))
        host_reads_forbidden(monkeypatch)
        got = model.score(x, sigma)
    monkeypatch.undo()
    assert torch.equal(got, want)


def test_model_score_still_checks_sigma_outside_a_capture():
    model, _ = tiny_model()
    with pytest.raises(ValueError, match="sigma: must be positive"):
        model.score(torch.rand(2, 1, 16, 16), torch.tensor([1.0, 0.0]))


def test_a_failed_capture_gives_the_stream_back(monkeypatch):
    # torch.cuda.graph makes its capture stream current; when the capture fails its __exit__ raises before putting
    # the caller's stream back. Stand-ins for the CUDA calls, so that this runs without a GPU.
    class Stream:
        def wait_stream(self, other) -> None:
            pass

    caller, current = Stream(), []
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *args: caller)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_stream", current.append)

    @contextlib.contextmanager
    def failing_capture(graph):
        current.append("capture stream")
        yield
        raise RuntimeError("operation failed due to a previous error during capture")

    monkeypatch.setattr(torch.cuda, "graph", failing_capture)
    with pytest.raises(RuntimeError, match="during capture"):
        runtime._GraphedScore(lambda x, y: x * y, torch.ones(2), torch.ones(2))
    assert current == ["capture stream", caller]
