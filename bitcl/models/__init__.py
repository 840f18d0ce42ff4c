"""Backbones of Bit layers and the continual (multi-head / growing-head) wrapper."""
from .backbones import BACKBONES, MLP, ConvNet
from .continual import ContinualModel, build_model

__all__ = ["BACKBONES", "MLP", "ConvNet", "ContinualModel", "build_model"]
