from ncsn_fast.models.refinenet import NCSN, NCSNDeeper, NCSNv2, NCSNv2Deeper, NCSNv2Deepest
from ncsn_fast.models.registry import (
    architecture_name,
    build_model,
    check_architecture,
    get_model_class,
    register_model,
    registered_models,
    required_divisor,
)

__all__ = [
    "NCSN",
    "NCSNDeeper",
    "NCSNv2",
    "NCSNv2Deeper",
    "NCSNv2Deepest",
    "architecture_name",
    "build_model",
    "check_architecture",
    "get_model_class",
    "register_model",
    "registered_models",
    "required_divisor",
]
