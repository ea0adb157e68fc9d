"""IFBFNet and its ablations, DeepLabV3+ and DANet; ``build_model(cfg.model)`` is the one entry point and gives a
``SegModel`` (any of them)."""

from ifbf.models.blocks import BalancedFusion, SpatialStream
from ifbf.models.ifbfnet import IFBFNet, SegModel, build_model

__all__ = ["BalancedFusion", "IFBFNet", "SegModel", "SpatialStream", "build_model"]
