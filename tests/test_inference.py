"""The inference network (ncsn_fast.inference): eager as the runtime was, compiled (jit) and AOT packages equal to
eager, the package cache (keys, loads, a torn package rebuilt, the folder's overrides), the runtime's pass-through.

Compiled networks are tiny (ngf 8, 8×8) and built once per module: Inductor compiles take 10–40 s on 2 cores."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast import inference
from ncsn_fast.inference import cache_key, cache_root, check_compile, inference_network, weights_hash
from ncsn_fast.sampling import SamplingPlan, runtime
from tests.conftest import rel_err


def tiny(name: str = "ncsnv2", channels: int = 1):
    cfg = nf.load_config(
        {
            "model": {"name": name, "ngf": 8, "num_classes": 6, "sigma_begin": 5.0, "sigma_end": 0.1},
            "data": {"image_size": 8, "channels": channels},
        }
    )
    torch.manual_seed(0)
    return nf.build_model(cfg).eval().requires_grad_(False)


def inputs(model, n: int = 3, seed: int = 0):
    """Fresh random images, the same for a seed (module fixtures compute outputs that tests compare with)."""
    x = torch.rand(n, model.config.data.channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    labels = torch.tensor([0, 2, 5, 1, 4] * 2)[:n]
    sigmas = model._levels(x.device)[labels]
    return x, labels, sigmas


# ---- without compiling -------------------------------------------------------------------------------------------


def test_check_compile_names_the_parameter():
    assert check_compile("compile", False) is None and check_compile("compile", None) is None
    assert check_compile("compile", True) == "jit" and check_compile("compile", "aot") == "aot"
    with pytest.raises(ValueError, match=r"^compile: unknown compile mode 'fast'"):
        check_compile("compile", "fast")
    with pytest.raises(ValueError, match="^compile:"):
        inference_network(tiny(), compile="yes")
    with pytest.raises(ValueError, match="^precision:"):
        inference_network(tiny(), precision="fp8")
    with pytest.raises(TypeError, match="^model:"):
        inference_network(lambda x, s: x)
    with pytest.raises(ValueError, match="^compile:"):
        SamplingPlan(compile="fast").check()


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("NCSN_FAST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "ncsn-fast"
    monkeypatch.setenv("NCSN_FAST_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("NCSN_FAST_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(cache_root()).endswith(".cache/ncsn-fast")


def test_cache_key_depends_on_weights_shape_precision_and_device():
    model = tiny()
    w = weights_hash(model)
    cpu = torch.device("cpu")
    key = cache_key(w, (3, 1, 8, 8), False, "fp32", cpu)
    assert key == cache_key(weights_hash(tiny()), (3, 1, 8, 8), False, "fp32", cpu)
    other = tiny()
    other.begin_conv.bias.data[0] += 1e-3
    assert cache_key(weights_hash(other), (3, 1, 8, 8), False, "fp32", cpu) != key
    assert cache_key(w, (3, 1, 16, 16), False, "fp32", cpu) != key
    assert cache_key(w, (4, 1, 8, 8), False, "fp32", cpu) != key  # the batch size is part of the key
    assert cache_key(w, (3, 1, 8, 8), False, "bf16", cpu) != key
    assert cache_key(w, (3, 1, 8, 8), True, "fp32", cpu) != key
    channels_last = tiny().to(memory_format=torch.channels_last)  # the layout the command line loads models in
    assert weights_hash(channels_last) == w
    assert inference.device_tag(cpu) == f"cpu-{torch.backends.cpu.get_cpu_capability()}"


@pytest.mark.parametrize("name", ["ncsnv2", "ncsn"])
def test_eager_is_what_the_runtime_did(name):
    model = tiny(name)
    x, labels, sigmas = inputs(model)
    net = inference_network(model)
    with torch.no_grad():
        assert torch.equal(net(x, labels), model(x, labels))
        assert torch.equal(net(x, sigmas), model.score(x, sigmas))
        assert torch.equal(net.score(x, sigmas), model.score(x, sigmas))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulated on this CPU
            half = nf.inference_network(model, "bf16")
            want = runtime.network(model.score, x.device, "bf16")(x, sigmas)
        out = half(x, sigmas)
    assert out.dtype == torch.float32 and torch.equal(out, want)


def test_runtime_passes_an_inference_network_through(monkeypatch):
    model = tiny()
    x, _, sigmas = inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        net = inference_network(model, "bf16")
    assert runtime.network(net, x.device, "bf16") is net
    assert runtime.network(net.score, x.device, "fp16") == net.score  # not wrapped for precision again
    with pytest.raises(ValueError, match="^compile: compiles ncsn-fast models"):
        runtime.network(lambda x, s: x, x.device, compile="jit")
    built = {}
    monkeypatch.setattr(
        "ncsn_fast.inference.inference_network", lambda *a, **k: built.setdefault("net", inference_network(model))
    )
    assert runtime.network(model.score, x.device, compile="aot") is built["net"]


def test_sampler_takes_an_inference_network_as_score():
    model = tiny()
    x0 = torch.rand(2, 1, 8, 8)
    net = inference_network(model)
    sampler = nf.get_sampler("ald")
    kw = {"n_steps_each": 1, "step_lr": 1e-5, "progress": False}
    a = sampler(net.score, x0, 4, 5.0, 0.1, torch.Generator().manual_seed(1), **kw)
    b = sampler(model.score, x0, 4, 5.0, 0.1, torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)


# ---- compiled ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2():
    return tiny("ncsnv2")


@pytest.fixture(scope="module")
def jit_v2(v2):
    return inference_network(v2, compile="jit")


def test_jit_fp32_equals_eager_on_ncsnv2(v2, jit_v2):
    x, labels, sigmas = inputs(v2)
    with torch.no_grad():
        assert rel_err(jit_v2(x, sigmas), v2.score(x, sigmas)) <= 1e-5
        assert rel_err(jit_v2(x, labels), v2(x, labels)) <= 1e-5
        x_cl = x.contiguous(memory_format=torch.channels_last)  # the layout generate.py samples in
        assert rel_err(jit_v2.score(x_cl, 0.7), v2.score(x, 0.7)) <= 1e-5
    with pytest.raises(ValueError, match="^sigma: must be positive"):
        jit_v2(x, -sigmas)


@pytest.mark.slow
def test_jit_fp32_equals_eager_on_the_original_ncsn():
    model = tiny("ncsn")
    x, labels, sigmas = inputs(model)
    net = inference_network(model, compile=True)
    with torch.no_grad():
        assert rel_err(net(x, labels), model(x, labels)) <= 1e-5
        assert rel_err(net(x, sigmas), model.score(x, sigmas)) <= 1e-5


@pytest.mark.slow
def test_jit_bf16_error_at_most_twice_eager_bf16(v2):
    x, _, sigmas = inputs(v2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        eager = inference_network(v2, "bf16")
        compiled = inference_network(v2, "bf16", compile="jit")
    with torch.no_grad():
        ref = v2.score(x, sigmas)
        e_eager, e_jit = rel_err(eager(x, sigmas), ref), rel_err(compiled(x, sigmas), ref)
    assert 0 < e_eager < 0.05
    assert e_jit <= 2 * e_eager


@pytest.fixture(scope="module")
def aot_cache(tmp_path_factory, v2):
    """One AOT package of the tiny NCSNv2 at batch 3, compiled into a fresh cache folder."""
    folder = tmp_path_factory.mktemp("ncsn-fast-cache")
    net = inference_network(v2, compile="aot", cache_dir=folder)
    x, _, sigmas = inputs(v2)
    err = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stderr(err):
        out = net(x, sigmas)
    assert (
        err.getvalue().startswith("ncsn-fast: compiled NCSNv2 (3×1×8×8, fp32, cpu-") and err.getvalue().count("\n") == 1
    )
    return folder, net, out


@pytest.mark.slow
def test_aot_fp32_equals_eager_and_writes_one_package(v2, aot_cache):
    folder, net, out = aot_cache
    x, labels, sigmas = inputs(v2)
    assert net.compiles == 1 and net.loads == 0
    with torch.no_grad():
        assert rel_err(out, v2.score(x, sigmas)) <= 1e-5
        assert rel_err(net(x, labels), v2(x, labels)) <= 1e-5
    assert net.compiles == 1 and net.loads == 0
    assert [p.name for p in folder.iterdir()] == [next(iter(net.paths.values())).name]  # no temp file left
    mode = next(folder.iterdir()).stat().st_mode & 0o777
    assert mode == 0o666 & ~inference._umask(), oct(mode)  # as any file the user writes, not mkstemp's 0600


@pytest.mark.slow
def test_aot_second_network_loads_without_compiling(v2, aot_cache, monkeypatch):
    folder, _, out = aot_cache

    def refuse(*args):
        raise AssertionError("compiled again instead of loading the cached package")

    monkeypatch.setattr(inference, "_compile_package", refuse)
    monkeypatch.setenv("NCSN_FAST_CACHE_DIR", str(folder))  # the environment's folder, no cache_dir=
    net = inference_network(v2, compile="aot")
    x, _, sigmas = inputs(v2)
    with torch.no_grad():
        assert torch.equal(net(x, sigmas), out)
    assert net.loads == 1 and net.compiles == 0


@pytest.mark.slow
def test_aot_corrupt_package_is_rebuilt_with_a_warning(v2, aot_cache, tmp_path, monkeypatch):
    folder, first, out = aot_cache
    path = next(iter(first.paths.values()))
    torn = tmp_path / path.name
    torn.write_bytes(path.read_bytes()[:1000])  # a torn copy in its own folder: the shared one stays good
    rebuilt = []

    def recompile(net, x, y, target):  # the same package again, without another minute of compiling
        rebuilt.append(target)
        target.write_bytes(path.read_bytes())

    monkeypatch.setattr(inference, "_compile_package", recompile)
    net = inference_network(v2, compile="aot", cache_dir=tmp_path)
    x, _, sigmas = inputs(v2)
    with pytest.warns(UserWarning, match=r"^cached package .* is unreadable.*rebuilding it"), torch.no_grad():
        again = net(x, sigmas)
    assert rebuilt == [torn] and net.compiles == 1 and torch.equal(again, out)
    assert inference_network(v2, compile="aot", cache_dir=tmp_path)._package(x, None) is not None


@pytest.mark.slow
def test_aot_fp32_equals_eager_on_the_original_ncsn(tmp_path):
    model = tiny("ncsn")
    x, labels, sigmas = inputs(model)
    net = inference_network(model, compile="aot", cache_dir=tmp_path)
    with torch.no_grad():
        assert rel_err(net(x, labels), model(x, labels)) <= 1e-5
        assert rel_err(net(x, sigmas), model.score(x, sigmas)) <= 1e-5
    assert net.compiles == 1


@pytest.mark.slow
def test_cli_compile_aot_reuses_the_cache(tmp_path, monkeypatch, capfd):
    from ncsn_fast.cli import main

    monkeypatch.setenv("NCSN_FAST_CACHE_DIR", str(tmp_path / "cache"))
    args = ["sample", "--nfe", "3", "--n", "2", "--quiet", "--compile"]  # bare: aot, which pays on a CPU too
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "ahead of time in" in capfd.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "ahead of time" not in capfd.readouterr().err  # loaded, not compiled
    assert len(list((tmp_path / "cache").glob("*.pt2"))) == 1
    a, b = torch.load(tmp_path / "a" / "samples.pt"), torch.load(tmp_path / "b" / "samples.pt")
    assert rel_err(a, b) == 0


def test_cli_compile_bad_value_is_one_line(capfd):
    from ncsn_fast.cli import main

    assert main(["sample", "--compile", "fast", "--nfe", "3", "--n", "2"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile" in err[0] and "'fast'" in err[0]
    from ncsn_fast.cli.main import build_parser

    for command in ("sample", "fid", "fid-select"):  # a bare --compile is the cached package (a CLI run is a process)
        more = {"sample": [], "fid": ["--stats", "s.npz"], "fid-select": ["--stats", "s.npz", "--ckpts", "run"]}
        args = build_parser().parse_args([command, "--compile", *more[command]])
        assert args.compile == "aot", command


@pytest.mark.slow
def test_doctor_compares_compiled_with_eager_and_names_the_fastest_path():
    from ncsn_fast.doctor import compile_rows

    rows = compile_rows("cpu", ("jit",), bf16=True)  # bf16 forced: emulated on a CPU without bf16 units
    checks = [r for r in rows if r.ok is not None]
    assert len(checks) == 2 and all(r.ok for r in checks), checks
    assert checks[0].error <= 1e-5 and "first call (compile)" in checks[0].note
    assert checks[1].name.startswith("tiny NCSNv2 compiled jit bf16") and 0 < checks[1].error <= checks[1].tolerance
    assert rows[-1].name == "fastest network path here (cpu)" and rows[-1].value.split()[0] in ("eager", "jit")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ncsn_32", "ncsnv2_32", "ncsnv2deeper_64", "ncsnv2deepest_64"])
def test_jit_on_every_official_reference_case(reference_dir, case):
    """Issue 23: compiled fp32 within 1e-5 of the official outputs on every ../shared/reference case (the original
    NCSN: labels in, no σ division; NCSNv2 and its deeper variants: the score at the labels' σ)."""
    folder = reference_dir / case
    model = nf.build_model(nf.load_config(folder / "config.yml")).eval()
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
    v = torch.load(folder / "vectors.pt", weights_only=True)
    net = inference_network(model, compile="jit")
    with torch.no_grad():
        assert rel_err(net(v["forward_x"], v["forward_labels"]), v["forward_out"]) <= 1e-5


@pytest.mark.parametrize("nfe", [None, 12])  # ald on the config's schedule (labels), a budget sampler (σ)
@pytest.mark.filterwarnings("ignore::UserWarning")  # a tiny random network's chain: far from the data range
def test_a_plan_that_compiles_samples_through_the_inference_network(monkeypatch, nfe):
    from ncsn_fast.sampling import sample_batches

    model = tiny()
    built = []

    def build(m, precision, compile, device):  # eager stands in for the compile (the wiring is what is tested)
        built.append((m, precision, compile))
        return inference_network(m, precision)

    monkeypatch.setattr("ncsn_fast.inference.inference_network", build)
    monkeypatch.setattr("ncsn_fast.inference.compile_pays", lambda device, precision, mode: None)  # as where it pays
    cfg = model.config
    cfg.sampling.n_steps_each = 1
    plan = {"nfe": nfe, "seed": 3, "data_init": False}
    want = next(sample_batches(model, cfg, SamplingPlan(**plan), 2, 2, progress=False)).images
    got = next(sample_batches(model, cfg, SamplingPlan(**plan, compile="aot"), 2, 2, progress=False)).images
    assert built == [(model, "fp32", "aot")] and torch.equal(got, want)


def test_compile_where_it_does_not_pay_says_so_and_runs_eager(monkeypatch, tmp_path, capfd):
    """Issue 23: ``--compile`` must not be slower than eager. On a CPU ``jit`` compiles again in every process
    (measured slower end to end, see :func:`ncsn_fast.inference.compile_pays`): the command warns in one line and
    samples eagerly: nothing compiled, the samples equal the eager run's. A cached ``aot`` package pays there."""
    from ncsn_fast.cli import main
    from ncsn_fast.inference import compile_pays

    assert compile_pays("cpu", "fp32", "jit").startswith("jit compiles again in every process")
    assert compile_pays("cpu", "fp32", "aot") is None
    from ncsn_fast.precision import hardware_half

    emulated = compile_pays("cpu", "bf16", "aot")
    assert emulated is None if hardware_half(torch.device("cpu"), "bf16") else emulated.startswith("bf16 on this CPU")

    def refuse(*args, **kwargs):
        raise AssertionError("compiled where it does not pay")

    monkeypatch.setattr("ncsn_fast.inference.inference_network", refuse)
    args = ["sample", "--nfe", "3", "--n", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    capfd.readouterr()
    assert main([*args, "--compile", "jit", "--out", str(tmp_path / "c")]) == 0
    warned = [line for line in capfd.readouterr().err.splitlines() if "compile:" in line]
    assert len(warned) == 1 and warned[0].endswith("; running eager"), warned
    a, b = torch.load(tmp_path / "eager" / "samples.pt"), torch.load(tmp_path / "c" / "samples.pt")
    assert torch.equal(a, b)


def test_protocol_records_the_network_that_ran(monkeypatch):
    """FID's protocol says which network sampled: compiled, or eager where a plan's compile did not pay."""
    cfg = tiny().config
    assert SamplingPlan(nfe=12).resolve(cfg, False).protocol("cpu")["compile"] == "eager"
    resolved = SamplingPlan(nfe=12, compile="aot").resolve(cfg, False)
    monkeypatch.setattr("ncsn_fast.inference.compile_pays", lambda device, precision, mode: "not here")
    proto = resolved.protocol("cpu")
    assert proto["compile"] == "eager" and proto["compile_asked"] == "aot"
    monkeypatch.setattr("ncsn_fast.inference.compile_pays", lambda device, precision, mode: None)
    proto = SamplingPlan(nfe=12, compile=True).resolve(cfg, False).protocol("cpu")
    assert proto["compile"] == "jit" and "compile_asked" not in proto


def test_inference_network_lower_norm_needs_a_compile_and_a_bool():
    with pytest.raises(ValueError, match="^lower_norm: lowers the norm for a compiler"):
        inference_network(tiny(), lower_norm=True)
    with pytest.raises(TypeError, match="^lower_norm: expected True or False"):
        inference_network(tiny(), compile="jit", lower_norm="yes")
    cpu = torch.device("cpu")
    key = cache_key("w", (3, 1, 8, 8), False, "fp32", cpu)
    assert cache_key("w", (3, 1, 8, 8), False, "fp32", cpu, lower_norm=True) != key


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["jit", "aot"])
def test_lower_norm_fp32_equals_eager(v2, mode, tmp_path):
    """Inductor lowering InstanceNorm++ + ELU (no fused kernel in the graph) keeps fp32 within 1e-5 of eager, and
    the AOT package of it is another cache entry."""
    x, labels, sigmas = inputs(v2)
    net = inference_network(v2, compile=mode, cache_dir=tmp_path, lower_norm=True)
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        assert rel_err(net(x, sigmas), v2.score(x, sigmas)) <= 1e-5
        assert rel_err(net(x, labels), v2(x, labels)) <= 1e-5
    if mode == "aot":
        assert net.compiles == 1 and len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_aot_dynamic_batch_is_right_for_a_one_channel_model(v2, tmp_path):
    """One package for every batch size (``dynamic_batch``) from the tiny one-channel NCSNv2: its first convolution's
    (C_out, 1, 3, 3) weight in channels-last strides made Inductor's frozen dynamic-batch package wrong (relative
    error 1.41 on torch 2.14.1); the inference network gives it NCHW strides."""
    net = inference_network(v2, compile="aot", cache_dir=tmp_path)
    net.dynamic_batch = True
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        for n in (3, 5, 1):
            x, labels, sigmas = inputs(v2, n, seed=n)
            assert rel_err(net(x, sigmas), v2.score(x, sigmas)) <= 1e-5, n
    assert net.compiles == 1


def test_a_cache_folder_that_cannot_be_made_names_its_setting(monkeypatch, tmp_path, capfd):
    """Before any compiling (and, from the CLI, before loading the model): one line naming where the folder came
    from; nothing written."""
    from ncsn_fast.cli import main
    from ncsn_fast.inference import check_cache_dir

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.delenv("NCSN_FAST_CACHE_DIR", raising=False)
    with pytest.raises(ValueError, match=r"^cache_dir: cannot make the compiled-package cache .*a-file/x"):
        check_cache_dir(blocker / "x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(ValueError, match="^XDG_CACHE_HOME: cannot make"):
        check_cache_dir()
    monkeypatch.setenv("NCSN_FAST_CACHE_DIR", str(blocker / "y"))
    with pytest.raises(ValueError, match="^NCSN_FAST_CACHE_DIR: cannot make"):
        check_cache_dir()
    with pytest.raises(ValueError, match="^NCSN_FAST_CACHE_DIR: cannot make"):  # the API, on the first call
        net = inference_network(tiny(), compile="aot")
        x, _, sigmas = inputs(net.model)
        net(x, sigmas)
    out = tmp_path / "out"
    assert main(["sample", "--nfe", "3", "--n", "2", "--quiet", "--compile", "--out", str(out)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ncsn-fast: error: --compile: NCSN_FAST_CACHE_DIR: cannot make"), err
    assert not out.exists()
