from ncsn_fast.nn.layers import ConvMeanPool, CRPBlock, MSFBlock, RCUBlock, RefineBlock, ResidualBlock, get_act
from ncsn_fast.nn.normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus

__all__ = [
    "ConvMeanPool",
    "CRPBlock",
    "MSFBlock",
    "RCUBlock",
    "RefineBlock",
    "ResidualBlock",
    "get_act",
    "ConditionalInstanceNorm2dPlus",
    "InstanceNorm2dPlus",
]
