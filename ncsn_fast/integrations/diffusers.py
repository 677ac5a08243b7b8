"""ncsn-fast in diffusers' terms: :class:`NCSNScoreModel` (``ModelMixin``), :class:`AnnealedLangevinScheduler`
(``SchedulerMixin``) and :class:`NCSNv2Pipeline` (``DiffusionPipeline``) → ``ImagePipelineOutput``.

    from ncsn_fast.integrations.diffusers import NCSNv2Pipeline, cli_generator

    pipe = NCSNv2Pipeline.from_ncsn_fast()  # the bundled digits model; or a checkpoint / save_pretrained folder
    images = pipe(batch_size=4, generator=cli_generator(seed=0)).images  # = `ncsn-fast sample --backend torch`
    pipe.save_pretrained("digits-pipeline")  # model_index.json, unet/ (safetensors), scheduler/
    pipe = NCSNv2Pipeline.from_pretrained("digits-pipeline")

The same computation as ``ncsn-fast sample --backend torch`` (see :mod:`ncsn_fast.sampling.langevin`): start
uniform in [0, 1] mapped by the config's data transform, T steps x ← x + α_i·s_θ(x, i) + √(2α_i)·z per noise level
with α_i = ε·(σ_i/σ_L)² and z = ``torch.randn`` of x's shape from ``generator``, in order (the official noise
stream), then the denoising step x ← x + σ_L²·s_θ(x, L) (NCSNv2 Appendix). On the CPU the network runs in
channels_last as the command line runs it, so the images are bitwise the command line's.

Imported only on demand (``pip install 'ncsn-fast[diffusers]'``); nothing else in ncsn_fast imports diffusers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch

try:
    from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin, SchedulerMixin
    from diffusers.configuration_utils import register_to_config
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
    from diffusers.schedulers.scheduling_utils import SchedulerOutput
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised only without diffusers
    raise ImportError(
        f"ncsn_fast.integrations.diffusers needs diffusers ({exc}); install it with pip install 'ncsn-fast[diffusers]'"
    ) from None

from ncsn_fast.config import Config, load_config
from ncsn_fast.vocab import SAMPLER_BACKENDS

OUTPUT_TYPES = ("pil", "np", "pt")


def cli_generator(seed: int = 0, batch: int = 0) -> torch.Generator:
    """The generator ``ncsn-fast sample --seed SEED`` draws batch ``batch`` from (its initial state and every
    Langevin noise): with it, the pipeline's images are that batch's samples."""
    from ncsn_fast.sampling.generate import batch_seed
    from ncsn_fast.validation import check_int

    check_int("seed", seed, 0)
    check_int("batch", batch, 0)
    return torch.Generator().manual_seed(batch_seed(seed, batch))


# ------------------------------------------------------------------------------------------------- step math
def langevin_update(sample: torch.Tensor, score: torch.Tensor, alpha: float, noise: torch.Tensor) -> torch.Tensor:
    """One step of Langevin dynamics (NCSN Algorithm 1, NCSNv2 Section 3): x + α·s + √(2α)·z, in the official
    order of operations (so the result is bitwise the command line's ``--backend torch`` update)."""
    return sample + alpha * score.to(sample.dtype) + math.sqrt(2.0 * alpha) * noise


def denoise_update(sample: torch.Tensor, score: torch.Tensor, sigma: float) -> torch.Tensor:
    """Tweedie's formula E[x_0 | x] = x + σ²·s(x, σ): the final denoising step (NCSNv2 Appendix)."""
    return sample + sigma**2 * score.to(sample.dtype)


# ------------------------------------------------------------------------------------------------- the model
@dataclass
class NCSNOutput(BaseOutput):
    """``sample``: the score s_θ(x, σ_label), same shape as the input (diffusers' name for a model's output)."""

    sample: torch.Tensor


class NCSNScoreModel(ModelMixin, ConfigMixin):
    """An ncsn-fast network (NCSN, NCSNv2, NCSNv2Deeper, NCSNv2Deepest) as a diffusers model.

    Its diffusers config is ``ncsn_config``, the ncsn-fast config dict in the official schema (what
    :func:`ncsn_fast.pretrained.official_config_dict` gives); the weights go through diffusers' own safetensors
    saving (``diffusion_pytorch_model.safetensors``, keys ``network.<our key>``). ``model(x, timestep)``: x in the
    config's data space, ``timestep`` the noise-level label (0 = σ_1, the largest), an int or a (N,) tensor.
    """

    @register_to_config
    def __init__(self, ncsn_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from ncsn_fast.models import build_model

        if not ncsn_config:
            raise ValueError("ncsn_config: required (the ncsn-fast config dict, official schema)")
        plain = json.loads(json.dumps(ncsn_config))  # diffusers hands back frozen dicts; the config wants plain ones
        self.network = build_model(load_config(plain))

    @property
    def ncsn(self) -> Config:
        """The ncsn-fast :class:`~ncsn_fast.config.Config` of the network."""
        return self.network.config

    @classmethod
    def from_ncsn(cls, model: torch.nn.Module, config: Config) -> NCSNScoreModel:
        """Wrap the weights of an ncsn-fast model (a copy: ``model`` is left as it is)."""
        from ncsn_fast.ema import unwrap_model
        from ncsn_fast.pretrained import official_config_dict

        wrapped = cls(ncsn_config=official_config_dict(config))
        wrapped.network.load_state_dict(unwrap_model(model).state_dict(), strict=True)
        return wrapped.to(next(model.parameters()).device).eval()

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True
    ) -> NCSNOutput | tuple[torch.Tensor]:
        """The score of ``sample`` (any floating dtype; the network runs in its own) at the label ``timestep``, in
        the sample's dtype."""
        if not (isinstance(sample, torch.Tensor) and sample.is_floating_point()):
            self.network.check_input("sample", sample)  # one line naming sample and what it was
        labels = torch.as_tensor(timestep, device=sample.device)
        if labels.dim() == 0:
            labels = torch.full((sample.shape[0],), int(labels), dtype=torch.long, device=sample.device)
        # The network in its own dtype, the score back in the sample's: a float32 chain stays float32 around a
        # bf16/fp16 network (as ncsn-fast's HalfNetwork), and in float32 both casts are no-ops (bitwise the CLI's).
        out = self.network(sample.to(self.network.begin_conv.weight.dtype), labels.long()).to(sample.dtype)
        return NCSNOutput(sample=out) if return_dict else (out,)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> NCSNScoreModel:
        """diffusers' loading, then the weights in ``torch_dtype`` (or ``dtype``, which wins, as in diffusers).

        diffusers builds the model under that default dtype but then assigns the file's float32 tensors to it, so
        the dtype would be lost; σ stays float32 (``RefineNetScore._apply``), as with ``.to(dtype)``."""
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(dtype, torch.dtype) and model.dtype != dtype:
            torch.nn.Module.to(model, dtype=dtype)  # not ModelMixin.to: its fp32-modules warning is about none here
        return model


# --------------------------------------------------------------------------------------------- the scheduler
class AnnealedLangevinScheduler(SchedulerMixin, ConfigMixin):
    """Annealed Langevin dynamics (NCSN Algorithm 1, NCSNv2 Section 3) as a diffusers scheduler.

    Config (saved as scheduler_config.json): ``sigmas`` σ_1 > … > σ_L (the model's schedule), ``n_steps_each`` T,
    ``step_lr`` ε for the full schedule (None: Technique 4 for it) and ``denoise`` (the final Tweedie step).

    State, set by :meth:`set_timesteps` only: the noise levels used (all L, or ``num_inference_steps`` of them
    evenly spaced in the label, the last always kept — ``ncsn-fast sample --every K`` is
    ``num_inference_steps = (L − 1)/K + 1`` when K divides L − 1), ``timesteps`` (each used label repeated T times:
    one entry per network evaluation) and ε (the config's for the full schedule; Technique 4 for a thinned one, as
    ``--every`` does). Step math: :func:`langevin_update` and :func:`denoise_update`, pure functions.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        sigmas: list[float] | None = None,
        n_steps_each: int = 5,
        step_lr: float | None = None,
        denoise: bool = True,
    ) -> None:
        from ncsn_fast.sampling.schedules import check_sigmas
        from ncsn_fast.validation import check_int, check_positive

        if sigmas is None:
            raise ValueError("sigmas: required (the model's noise levels σ_1 > … > σ_L)")
        self.all_sigmas = check_sigmas(sigmas)
        check_int("n_steps_each", n_steps_each, 1)
        if step_lr is not None:
            check_positive("step_lr", step_lr)
        self.init_noise_sigma = 1.0  # the official start is uniform in [0, 1], not Gaussian
        self.timesteps: torch.Tensor | None = None
        self.labels: list[int] = []
        self.step_lr: float | None = None
        self.num_inference_steps: int | None = None

    @classmethod
    def from_ncsn_config(cls, config: Config | str | dict[str, Any]) -> AnnealedLangevinScheduler:
        """The sampling settings of an ncsn-fast config: its σ schedule, ``sampling.n_steps_each``, ε as
        ``ncsn-fast sample`` resolves it (:func:`~ncsn_fast.techniques.resolve_step_lr`), ``sampling.denoise``."""
        from ncsn_fast.techniques import get_sigmas, resolve_step_lr

        cfg = load_config(config)
        return cls(
            sigmas=[float(s) for s in get_sigmas(cfg)],
            n_steps_each=cfg.sampling.n_steps_each,
            step_lr=resolve_step_lr(cfg)[0],
            denoise=cfg.sampling.denoise,
        )

    def __len__(self) -> int:
        return len(self.all_sigmas)

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None) -> None:
        """Use ``num_inference_steps`` noise levels (2 … L; None: all L) — see the class docstring."""
        from ncsn_fast.sampling.schedules import warn_if_too_coarse
        from ncsn_fast.techniques import step_lr_for
        from ncsn_fast.validation import check_int

        total, t = len(self.all_sigmas), self.config.n_steps_each
        n = total if num_inference_steps is None else num_inference_steps
        check_int("num_inference_steps", n, min(2, total), total)
        if n == total:
            labels = list(range(total))
            eps = self.config.step_lr if self.config.step_lr is not None else step_lr_for(self.all_sigmas, t)
        else:
            labels = [int(v) for v in torch.linspace(0, total - 1, n, dtype=torch.float64).round()]
            eps = step_lr_for(self.all_sigmas[labels], t)
        warn_if_too_coarse(self.all_sigmas[labels], eps, t, "num_inference_steps")
        self.labels, self.step_lr, self.num_inference_steps = labels, float(eps), n
        self.timesteps = torch.tensor(labels, dtype=torch.long, device=device).repeat_interleave(t)

    def step_size(self, timestep: torch.Tensor | int) -> float:
        """α = ε·(σ_label/σ_L)² for the noise level ``timestep`` (a label)."""
        if self.step_lr is None:
            raise ValueError("timesteps: call set_timesteps before step")
        sigma, sigma_last = float(self.all_sigmas[int(timestep)]), float(self.all_sigmas[-1])
        return self.step_lr * (sigma / sigma_last) ** 2

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample  # the network takes x as it is

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One Langevin step at noise level ``timestep`` with the score ``model_output``; z is one
        ``torch.randn`` of the sample's shape from ``generator`` (on the generator's device)."""
        alpha = self.step_size(timestep)
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev = langevin_update(sample, model_output, alpha, noise)
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def denoise(
        self, model_output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """The final denoising step x + σ²·s(x, σ) at noise level ``timestep`` (the last one)."""
        prev = denoise_update(sample, model_output, float(self.all_sigmas[int(timestep)]))
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x + σ_label·z per sample (the perturbation the network was trained to denoise)."""
        sigma = self.all_sigmas.to(original.device)[timesteps.to(original.device).long()]
        return original + sigma.view(-1, *([1] * (original.dim() - 1))).to(original.dtype) * noise


# ------------------------------------------------------------------------------------------------- the pipeline
class NCSNv2Pipeline(DiffusionPipeline):
    """Unconditional image generation with an NCSN / NCSNv2 score model and annealed Langevin dynamics.

    Components: ``unet`` (:class:`NCSNScoreModel`; the name diffusers' unconditional pipelines use — the network is
    a RefineNet) and ``scheduler`` (:class:`AnnealedLangevinScheduler`).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: NCSNScoreModel, scheduler: AnnealedLangevinScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def from_ncsn_fast(
        cls,
        ckpt: str | None = None,
        config: str | Config | None = None,
        ema: bool = True,
        device: torch.device | str = "cpu",
    ) -> NCSNv2Pipeline:
        """The pipeline of an ncsn-fast model: ``ckpt`` a save_pretrained folder, a checkpoint (official or
        ncsn-fast, .pth or .safetensors) or a training workdir, None for the bundled digits model; ``config`` as
        for ``--config`` (default: the checkpoint's). The scheduler takes the config's sampling settings."""
        from ncsn_fast.pretrained import load_model

        model, cfg, _ = load_model(ckpt, config, ema=ema, device=device)
        return cls(NCSNScoreModel.from_ncsn(model, cfg), AnnealedLangevinScheduler.from_ncsn_config(cfg))

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        backend: str = "torch",
        image: Any = None,
        strength: float = 0.8,
    ) -> ImagePipelineOutput | tuple[Any]:
        """``batch_size`` images from annealed Langevin dynamics on ``num_inference_steps`` noise levels (default:
        all of the model's). ``generator``: one CPU (or sample-device) ``torch.Generator`` for the initial state
        and every noise draw — :func:`cli_generator` gives the command line's. ``output_type``: "pil" (a list of
        PIL images), "np" ((N, H, W, C) float32 in [0, 1]) or "pt" ((N, C, H, W) float32 in [0, 1], on the CPU).
        ``backend``: the ops of the network; "torch" (default) the official computation, as ``--backend torch``
        (the update and its noise are always the scheduler's). The unet may be in any dtype (``pipe.to(torch.
        bfloat16)``, ``from_pretrained(folder, torch_dtype=torch.float16)``): the chain stays float32 and only the
        network runs in the unet's dtype, as ncsn-fast's own runtime does; in float32 the images are bitwise the
        command line's.

        ``image`` (SDEdit, Meng et al. 2022, as diffusers' img2img pipelines): a PIL image, a list of them, or a
        float tensor (C, H, W) / (N, C, H, W) in [0, 1] of the model's size and channels; it replaces the random
        start: x = data_transform(image) + σ·z at the level where the last ⌊strength·num_inference_steps⌋ levels
        begin (diffusers' convention: ``strength`` 1 runs every level, small values keep more of the image), z the
        generator's first draw. One image serves a whole ``batch_size``; N images set the batch. ValueError naming
        ``image`` (size, channels, range, type) or ``strength`` (outside (0, 1], or no level left to run)."""
        from ncsn_fast.data import data_transform, inverse_data_transform
        from ncsn_fast.ops._backend import use_backend
        from ncsn_fast.sampling.generate import check_data_range
        from ncsn_fast.sampling.initial import init_samples
        from ncsn_fast.validation import check_int

        check_int("batch_size", batch_size, 1)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if backend not in SAMPLER_BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; choose one of {', '.join(SAMPLER_BACKENDS)}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: one torch.Generator (the noise is one stream), got {type(generator).__name__}")
        cfg = self.unet.ncsn
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        timesteps = self.scheduler.timesteps
        if image is None:
            x = init_samples(batch_size, shape, generator, device, config=cfg)  # uniform [0, 1] → data space
        else:
            start = _edit_start(self.scheduler.num_inference_steps, strength)
            x = data_transform(cfg, _image_batch(image, shape, batch_size).to(device), dequantize=False)
            label = self.scheduler.labels[start]
            z = randn_tensor(x.shape, generator=generator, device=device, dtype=x.dtype)
            x = x + float(self.scheduler.all_sigmas[label]) * z  # SDEdit's perturbation to the start level
            timesteps = timesteps[start * self.scheduler.config.n_steps_each :]
        if device.type == "cpu":  # as `ncsn-fast sample`: 1.5-1.8× faster convolutions, and its exact float results
            self.unet.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with use_backend("reference" if backend == "torch" else backend):
            for t in self.progress_bar(timesteps):
                x = self.scheduler.step(self.unet(x, t).sample, t, x, generator=generator).prev_sample
            if self.scheduler.config.denoise:
                last = self.scheduler.labels[-1]
                x = self.scheduler.denoise(self.unet(x, last).sample, last, x).prev_sample
        if not torch.isfinite(x).all():
            raise FloatingPointError("sampling diverged: non-finite values (check step_lr and num_inference_steps)")
        check_data_range(cfg, x)
        image = inverse_data_transform(cfg, x.float()).cpu().contiguous()
        if output_type != "pt":
            image = image.permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if return_dict else (image,)


def _edit_start(levels: int, strength: float) -> int:
    """The index of the first level an edit runs: diffusers' img2img rule, the last ⌊strength·levels⌋ levels."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength: must be in (0, 1], got {strength!r}")
    run = min(int(levels * strength), levels)
    if run < 1:
        raise ValueError(
            f"strength: {strength} of {levels} noise levels runs none; raise strength to ≥ {1 / levels:.3g} or "
            "num_inference_steps"
        )
    return levels - run


def _image_batch(image: Any, shape: tuple[int, int, int], batch_size: int) -> torch.Tensor:
    """PIL image(s) or a [0, 1] float tensor → (N, C, H, W) float32 of the model's ``shape``; ValueError naming
    ``image``."""
    import numpy as np

    if isinstance(image, (list, tuple)) or hasattr(image, "getpixel"):  # PIL image(s)
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        try:
            arrays = [np.asarray(im.convert("L" if shape[0] == 1 else "RGB"), dtype=np.float32) / 255 for im in images]
        except AttributeError:
            raise ValueError(
                f"image: a list of PIL images expected, got {[type(im).__name__ for im in images]}"
            ) from None
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"image: the images differ in size: {sorted({a.shape for a in arrays})}")
        x = torch.from_numpy(np.stack(arrays))
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise ValueError(f"image: a float tensor in [0, 1] expected, got dtype {image.dtype} (use x.float() / 255)")
        x = image.unsqueeze(0) if image.dim() == 3 else image
    else:
        raise ValueError(f"image: a PIL image, a list of them or a float tensor, got {type(image).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"image: the model takes {tuple(shape)} (C, H, W) images, got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if not (torch.isfinite(x).all() and lo >= 0 and hi <= 1):
        raise ValueError(f"image: values in [0, 1] expected, got [{lo:.3g}, {hi:.3g}]")
    if x.shape[0] == 1 and batch_size > 1:
        x = x.expand(batch_size, -1, -1, -1)
    elif x.shape[0] != batch_size and batch_size != 1:
        raise ValueError(f"image: {x.shape[0]} images for batch_size {batch_size}; pass one image or batch_size 1")
    return x.float().contiguous()


__all__ = [
    "AnnealedLangevinScheduler",
    "NCSNOutput",
    "NCSNScoreModel",
    "NCSNv2Pipeline",
    "cli_generator",
    "denoise_update",
    "langevin_update",
]
