"""IFBFNet and its ablations, and DeepLabV3+; ``build_model(cfg.model)`` is the one entry point and gives a
``SegModel`` (either)."""

from ifbf.models.blocks import BalancedFusion, SpatialStream
from ifbf.models.ifbfnet import IFBFNet, SegModel, build_model

__all__ = ["BalancedFusion", "IFBFNet", "SegModel", "SpatialStream", "build_model"]
