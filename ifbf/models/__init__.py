"""IFBFNet and its ablations; ``build_model(cfg.model)`` is the one entry point."""

from ifbf.models.blocks import BalancedFusion, SpatialStream
from ifbf.models.ifbfnet import IFBFNet, build_model

__all__ = ["BalancedFusion", "IFBFNet", "SpatialStream", "build_model"]
