"""ncsn-fast: NCSN / NCSNv2 score-based generative models (Song & Ermon, NeurIPS 2019 / 2020) in PyTorch."""

from ncsn_fast.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ncsn_fast.config import Config, ConfigError, load_config
from ncsn_fast.ema import EMA
from ncsn_fast.losses import dsm_loss
from ncsn_fast.models import build_model
from ncsn_fast.sampling import annealed_langevin, init_samples, inpaint, interpolate
from ncsn_fast.techniques import get_sigmas

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "EMA",
    "annealed_langevin",
    "build_model",
    "dsm_loss",
    "get_sigmas",
    "init_samples",
    "inpaint",
    "interpolate",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
]
