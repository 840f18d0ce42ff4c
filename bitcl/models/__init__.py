"""Backbones of Bit layers (a registry: one file each) and the continual multi-head wrapper."""
from .backbones import BACKBONES, MLP, ConvNet
from .continual import ContinualModel
from .spec import build_model
from .factory import (BackboneArgs, LayerFactory, backbone_names, backbone_spec, register_backbone,
                      training_defaults)

__all__ = ["BACKBONES", "MLP", "ConvNet", "ContinualModel", "build_model", "BackboneArgs", "LayerFactory",
           "backbone_names", "backbone_spec", "register_backbone", "training_defaults"]
