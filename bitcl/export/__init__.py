"""Edge deployment: packed bit-plane files, ONNX (brevitas QCDQ), and a numpy reference runtime."""
from .checkpoint_model import load_checkpoint_model
from .packed import PackedModel, export_packed, load_packed, read_packed
from .runtime import NumpyRuntime

__all__ = ["NumpyRuntime", "PackedModel", "export_packed", "load_checkpoint_model", "load_packed", "read_packed"]
