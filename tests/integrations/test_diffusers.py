"""The diffusers bridge, offline: the pipeline's images are bitwise ``ncsn-fast sample --backend torch``'s samples
(same seed, same schedule), the pipeline round-trips through save_pretrained/from_pretrained (safetensors, no
``torch.load``), the scheduler's state is apart from its step math (closed forms), the generator decides
everything, and fp32/bf16/fp16 work through ``.to()`` and ``from_pretrained(torch_dtype=/dtype=)``.

Equality, not a tolerance: on the CPU the pipeline runs the network in channels_last as the command line does (NCHW
weights would give ~2.5e-6 absolute differences from another convolution path), with the same reference ops, the
same α (float64 Python arithmetic) and the same ``torch.randn`` stream, so the images are identical.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

try:
    import diffusers  # noqa: F401
except ImportError as exc:  # not installed, or installed against incompatible dependencies
    pytest.skip(
        f"diffusers is not importable ({exc}); the bridge is optional: pip install 'ncsn-fast[diffusers]'",
        allow_module_level=True,
    )

from ncsn_fast.cli import main  # noqa: E402
from ncsn_fast.integrations.diffusers import (  # noqa: E402
    AnnealedLangevinScheduler,
    NCSNScoreModel,
    NCSNv2Pipeline,
    cli_generator,
    denoise_update,
    langevin_update,
)
from tests.conftest import rel_err  # noqa: E402

EVERY = 8  # the CLI's --every 8 on L = 49 levels is num_inference_steps = 48/8 + 1 = 7 (35 + 1 evaluations)
LEVELS = 48 // EVERY + 1


@pytest.fixture(scope="module")
def pipe():
    p = NCSNv2Pipeline.from_ncsn_fast()  # the bundled digits model
    p.set_progress_bar_config(disable=True)
    return p


def quiet(fn, *args, **kwargs):
    """Thinned schedules are coarse on purpose here (seconds, not minutes): their warning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_the_pipeline_reproduces_the_command_line_bitwise(pipe, tmp_path, capsys):
    seed = int(torch.randint(0, 2**31, (1,)))
    out = tmp_path / "cli"
    args = ["sample", "--backend", "torch", "--seed", str(seed), "--n", "5", "--batch-size", "3", "--every", str(EVERY)]
    assert quiet(main, [*args, "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    cli = torch.load(out / "samples.pt", weights_only=True)
    assert cli.shape == (5, 1, 16, 16) and float(cli.std()) > 0.05
    for batch, (start, size) in enumerate(((0, 3), (3, 2))):  # each CLI batch has its own generator
        gen = cli_generator(seed, batch)
        images = quiet(pipe, batch_size=size, generator=gen, num_inference_steps=LEVELS, output_type="pt").images
        assert torch.equal(images, cli[start : start + size]), (batch, (images - cli[start : start + size]).abs().max())
    arrays = quiet(pipe, batch_size=3, generator=cli_generator(seed), num_inference_steps=LEVELS, output_type="np")
    assert torch.equal(torch.from_numpy(arrays.images).permute(0, 3, 1, 2), cli[:3])
    pil = quiet(pipe, batch_size=3, generator=cli_generator(seed), num_inference_steps=LEVELS).images
    assert [im.size for im in pil] == [(16, 16)] * 3 and pil[0].mode == "L"
    expected = (cli[0, 0] * 255).round().to(torch.uint8)
    assert (torch.from_numpy(np.array(pil[0])).int() - expected.int()).abs().max() <= 1


@pytest.mark.slow
def test_the_full_schedule_is_the_command_lines_default_run(pipe, tmp_path, capsys):
    """The defaults on both sides (L = 49, T = 5, the config's ε, denoising): 246 evaluations, ~12 s a side."""
    seed = int(torch.randint(0, 2**31, (1,)))
    args = ["sample", "--backend", "torch", "--seed", str(seed), "--n", "2", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    images = pipe(batch_size=2, generator=cli_generator(seed), output_type="pt").images
    assert torch.equal(images, torch.load(tmp_path / "samples.pt", weights_only=True))


@pytest.mark.parametrize("every", [1, 2, 3, 4, 6, 8, 12, 16, 24, 48])
def test_the_schedule_is_the_command_lines(pipe, every):
    """num_inference_steps = 48/K + 1 gives the labels and ε of `--every K` (and of the full plan for K = 1)."""
    from ncsn_fast.sampling import SamplingPlan
    from ncsn_fast.techniques import get_sigmas

    cfg = pipe.unet.ncsn
    plan = SamplingPlan(every=every, backend="torch").resolve(cfg)
    sched = AnnealedLangevinScheduler.from_ncsn_config(cfg)
    quiet(sched.set_timesteps, 48 // every + 1)
    assert sched.labels == plan.labels
    assert sched.step_lr == plan.step_lr  # exactly: the same function on the same float32 σ
    assert torch.equal(sched.all_sigmas, get_sigmas(cfg))
    assert sched.timesteps.tolist() == [lab for lab in plan.labels for _ in range(plan.n_steps_each)]


def test_save_and_load_round_trip_offline_without_pickle(pipe, tmp_path, monkeypatch):
    pipe.save_pretrained(tmp_path / "pipe")
    files = sorted(str(p.relative_to(tmp_path / "pipe")) for p in (tmp_path / "pipe").rglob("*") if p.is_file())
    assert files == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = NCSNv2Pipeline.from_pretrained(tmp_path / "pipe")
    again.set_progress_bar_config(disable=True)
    assert type(again.unet) is NCSNScoreModel and type(again.scheduler) is AnnealedLangevinScheduler
    assert dict(again.scheduler.config) == dict(pipe.scheduler.config)
    a, b = pipe.unet.state_dict(), again.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seed = int(torch.randint(0, 2**31, (1,)))
    one = quiet(pipe, batch_size=2, generator=cli_generator(seed), num_inference_steps=2, output_type="pt").images
    two = quiet(again, batch_size=2, generator=cli_generator(seed), num_inference_steps=2, output_type="pt").images
    assert torch.equal(one, two)


def test_the_model_wrapper_is_the_network(pipe, reference_dir):
    """Labels as an int or a per-sample tensor; and a reference checkpoint through the wrapper against the official
    forward outputs (1e-5: ../shared/reference/README.md)."""
    model, cfg = __import__("ncsn_fast").load_pretrained()
    wrapped = NCSNScoreModel.from_ncsn(model, cfg)
    x = torch.rand(3, 1, 16, 16)
    labels = torch.randint(0, 49, (3,))
    with torch.no_grad():
        assert torch.equal(wrapped(x, labels).sample, model(x, labels))
        assert torch.equal(wrapped(x, 11, return_dict=False)[0], model(x, torch.full((3,), 11)))
    src = reference_dir / "ncsnv2_32"
    ref = NCSNv2Pipeline.from_ncsn_fast(str(src / "checkpoint.pth"), str(src / "config.yml"))
    v = torch.load(src / "vectors.pt", weights_only=True)
    with torch.no_grad():
        assert rel_err(ref.unet(v["forward_x"], v["forward_labels"]).sample, v["forward_out_ema"]) <= 1e-5
    assert ref.scheduler.config.sigmas == [float(s) for s in v["sigmas"]]


def test_scheduler_state_is_apart_from_the_step_math(pipe):
    sched = AnnealedLangevinScheduler.from_ncsn_config(pipe.unet.ncsn)
    x, s = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(s, 3, x)
    sched.set_timesteps()
    sigma = sched.all_sigmas.double()
    eps = sched.config.step_lr
    for label in (0, 17, 48):  # α = ε (σ_i/σ_L)², from the state set by set_timesteps
        assert sched.step_size(label) == pytest.approx(eps * float(sigma[label] / sigma[-1]) ** 2, rel=1e-12)
    before = (sched.timesteps.clone(), sched.step_lr, list(sched.labels))
    seed = int(torch.randint(0, 2**31, (1,)))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    alpha = sched.step_size(17)
    got = sched.step(s, 17, x, generator=torch.Generator().manual_seed(seed)).prev_sample
    assert torch.equal(got, langevin_update(x, s, alpha, z))
    closed = x.double() + alpha * s.double() + (2 * alpha) ** 0.5 * z.double()
    assert rel_err(got, closed) <= 1e-6
    # stepping changes no state: the same call after other steps gives the same result
    sched.step(s, 40, x, generator=torch.Generator().manual_seed(seed + 1))
    assert torch.equal(sched.step(s, 17, x, generator=torch.Generator().manual_seed(seed)).prev_sample, got)
    assert torch.equal(sched.timesteps, before[0]) and (sched.step_lr, sched.labels) == before[1:]
    # the denoising step: x + σ_L² s
    out = sched.denoise(s, 48, x).prev_sample
    assert torch.equal(out, denoise_update(x, s, float(sched.all_sigmas[48])))
    assert rel_err(out, x.double() + float(sigma[48]) ** 2 * s.double()) <= 1e-6
    # only set_timesteps changes the state
    quiet(sched.set_timesteps, 13)
    assert len(sched.timesteps) == 13 * 5 and sched.step_lr != before[1]


def test_the_generator_decides_everything(pipe):
    seed = int(torch.randint(0, 2**31, (1,)))
    run = lambda gen: quiet(pipe, batch_size=2, generator=gen, num_inference_steps=2, output_type="pt").images  # noqa: E731
    a = run(torch.Generator().manual_seed(seed))
    b = run(torch.Generator().manual_seed(seed))
    c = run(torch.Generator().manual_seed(seed + 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(seed)
    d = run(None)  # None: the global generator, so torch.manual_seed decides
    torch.manual_seed(seed)
    assert torch.equal(d, run(None))


@pytest.mark.parametrize(
    "kwargs,error,needle",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"output_type": "jpg"}, ValueError, "output_type"),
        ({"num_inference_steps": 1}, ValueError, "num_inference_steps"),
        ({"num_inference_steps": 50}, ValueError, "num_inference_steps"),
        ({"backend": "gpu"}, ValueError, "backend"),
        ({"generator": [torch.Generator(), torch.Generator()]}, TypeError, "generator"),
    ],
)
def test_bad_arguments_name_the_argument(pipe, kwargs, error, needle):
    with pytest.raises(error, match=needle):
        pipe(**kwargs)


def test_diffusers_is_imported_only_on_demand():
    import subprocess
    import sys

    code = "import sys, ncsn_fast, ncsn_fast.pretrained, ncsn_fast.sampling; print('diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# ------------------------------------------------------------------------------------ dtypes (issue 22, item 2)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_SEED, DTYPE_EVERY = 7, 24  # num_inference_steps 3 = --every 24 (levels 0, 24, 48): 15 + 1 evaluations


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def dtype_references(tmp_path_factory):
    """The command line's computation (sample_batches on the channels-last model, --backend torch --every 24), in
    float32 and in each low precision as ncsn-fast runs it there with this backend (plain PyTorch autocast), and a
    save_pretrained folder for from_pretrained."""
    import ncsn_fast as nf
    from ncsn_fast.sampling import SamplingPlan, sample_batches

    model, cfg = nf.load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)  # as `ncsn-fast sample` on the CPU

    def cli(precision):
        plan = SamplingPlan(every=DTYPE_EVERY, backend="torch", precision=precision, seed=DTYPE_SEED)
        return quiet(lambda: next(sample_batches(model, cfg, plan, 4, 4, progress=False)).images.cpu())

    folder = tmp_path_factory.mktemp("pipe")
    NCSNv2Pipeline.from_ncsn_fast().save_pretrained(folder)
    return folder, {name: cli(name) for name in DTYPES}


@pytest.mark.parametrize("route", ["to", "from_pretrained(torch_dtype=)", "from_pretrained(dtype=)"])
@pytest.mark.parametrize("name", list(DTYPES))
def test_every_dtype_through_to_and_from_pretrained(dtype_references, name, route):
    """The unet in the dtype asked for (σ kept float32), the chain in float32 around it, finite images. fp32 is
    bitwise the command line's. bf16/fp16 are within 2× the error of ncsn-fast's own run in that precision with
    the same backend (torch autocast on the float32 model: plain PyTorch in the same precision, the house rule for
    low precision); measured ratios 0.9–1.3 over seeds 0, 1 at this schedule, errors ~0.9% (bf16) and ~0.1% (fp16)
    relative, as their 8 and 11 significand bits would have it (a factor 2³ apart)."""
    folder, refs = dtype_references
    dtype = DTYPES[name]
    if route == "to":
        p = NCSNv2Pipeline.from_ncsn_fast().to(dtype)
    else:
        p = NCSNv2Pipeline.from_pretrained(folder, **{route.split("(")[1].split("=")[0]: dtype})
    p.set_progress_bar_config(disable=True)
    assert p.unet.dtype == dtype and p.unet.network.begin_conv.weight.dtype == dtype
    assert p.unet.network.sigmas.dtype == torch.float32  # Technique 3 divides by the exact σ
    gen = cli_generator(DTYPE_SEED)
    images = quiet(p, batch_size=4, generator=gen, num_inference_steps=48 // DTYPE_EVERY + 1, output_type="pt").images
    assert images.dtype == torch.float32 and images.shape == (4, 1, 16, 16) and torch.isfinite(images).all()
    if name == "fp32":
        assert torch.equal(images, refs["fp32"])
        return
    err, own = _rel(images, refs["fp32"]), _rel(refs[name], refs["fp32"])
    assert 0 < err <= 2 * own, (name, route, err, own)


def test_the_score_model_takes_any_float_sample_and_answers_in_its_dtype(pipe):
    """A float32 sample into a bf16 unet (what the pipeline's float32 chain does), the score back in float32; a
    sample that is no float tensor is one line naming ``sample``."""
    unet = NCSNScoreModel.from_ncsn(pipe.unet.network, pipe.unet.ncsn).to(torch.bfloat16)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        out = unet(x, 3).sample
        assert out.dtype == torch.float32
        assert torch.equal(unet(x.bfloat16(), 3).sample, out.bfloat16())  # the same network call, cast back
    with pytest.raises(TypeError, match=r"^sample: .*got a numpy\.ndarray"):
        unet(x.numpy(), 3)


# ------------------------------------------------------------------------------------------ SDEdit: image=, strength=
def _edit_inputs(pipe, seed):
    cfg = pipe.unet.ncsn
    g = torch.Generator().manual_seed(seed)
    return cfg, torch.rand(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size, generator=g)


def test_an_edit_continues_ncsn_fasts_own_chain_from_the_perturbed_image(pipe):
    """image=/strength= against the library's ALD from the same start: x = data(image) + σ_k·z (z the generator's
    first draw), then annealed_langevin from level k (start_level) with the scheduler's labels and ε."""
    from ncsn_fast.data import data_transform, inverse_data_transform
    from ncsn_fast.sampling import annealed_langevin

    seed = int(torch.randint(0, 2**31, (1,)))
    cfg, image = _edit_inputs(pipe, seed)
    strength = 0.5
    got = quiet(pipe, generator=cli_generator(seed), num_inference_steps=LEVELS, output_type="pt", image=image,
                strength=strength).images  # fmt: skip
    sched = pipe.scheduler
    start = LEVELS - int(LEVELS * strength)  # diffusers' img2img rule: the last ⌊strength·steps⌋ levels run
    g = cli_generator(seed)
    x = data_transform(cfg, image, dequantize=False)
    x = x + float(sched.all_sigmas[sched.labels[start]]) * torch.randn(x.shape, generator=g)
    sigmas = sched.all_sigmas[sched.labels]
    model = pipe.unet.network.to(memory_format=torch.channels_last)
    out = quiet(annealed_langevin, model, x.contiguous(memory_format=torch.channels_last), sigmas,
                sched.config.n_steps_each, sched.step_lr, denoise=sched.config.denoise, generator=g, backend="torch",
                labels=sched.labels, start_level=start)  # fmt: skip
    want = inverse_data_transform(cfg, out.float())
    assert got.shape == image.shape and rel_err(got, want) <= 1e-6, rel_err(got, want)


def test_a_light_edit_keeps_the_image_and_a_strong_one_forgets_it(pipe):
    seed = int(torch.randint(0, 2**31, (1,)))
    _, image = _edit_inputs(pipe, seed)
    image = (image > 0.5).float()  # a binary pattern: far from any digit
    light = quiet(
        pipe,
        generator=cli_generator(seed),
        num_inference_steps=LEVELS,
        output_type="pt",
        image=image,
        strength=1 / LEVELS,
    ).images  # fmt: skip  only the last level (σ_L) runs
    strong = quiet(pipe, generator=cli_generator(seed), num_inference_steps=LEVELS, output_type="pt", image=image,
                   strength=1.0).images  # fmt: skip
    assert float((light - image).abs().mean()) < 0.05
    assert float((strong - image).abs().mean()) > 0.3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"strength": 0.0}, "strength: must be in (0, 1], got 0.0"),
        ({"strength": 1.5}, "strength: must be in (0, 1], got 1.5"),
        ({"strength": 0.01}, "strength: 0.01 of 7 noise levels runs none"),
        (
            {"image": torch.rand(1, 3, 16, 16)},
            "image: the model takes (1, 16, 16) (C, H, W) images, got shape (1, 3, 16, 16)",
        ),
        ({"image": torch.rand(1, 1, 16, 16) * 2}, "image: values in [0, 1] expected"),
        (
            {"image": torch.randint(0, 255, (1, 1, 16, 16))},
            "image: a float tensor in [0, 1] expected, got dtype torch.int64",
        ),
        ({"image": np.zeros((16, 16))}, "image: a PIL image, a list of them or a float tensor, got ndarray"),
    ],
)
def test_a_bad_edit_is_one_line_naming_the_argument(pipe, kwargs, message):
    kwargs = {"image": torch.rand(1, 1, 16, 16), "strength": 0.5} | kwargs
    with pytest.raises(ValueError) as err:
        pipe(generator=cli_generator(0), num_inference_steps=LEVELS, output_type="pt", **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_an_edit_takes_pil_images(pipe):
    from PIL import Image

    _, image = _edit_inputs(pipe, 5)
    pil = [Image.fromarray((im[0].numpy() * 255).round().astype(np.uint8)) for im in image]
    out = quiet(pipe, generator=cli_generator(5), num_inference_steps=LEVELS, output_type="pt", image=pil,
                strength=0.3).images  # fmt: skip
    ref = quiet(pipe, generator=cli_generator(5), num_inference_steps=LEVELS, output_type="pt",
                image=(image * 255).round() / 255, strength=0.3).images  # fmt: skip
    assert out.shape == (2, 1, 16, 16) and rel_err(out, ref) <= 1e-6
