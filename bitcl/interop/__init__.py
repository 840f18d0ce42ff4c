"""bitcl in users' own models: ``quantize_`` any model's Linear/Conv2d layers into Bit layers and
back (``dequantize_``), and the one place that makes torchvision importable with a CPU torch."""
from .quantize import BitConfig, LayerReport, QuantizationReport, dequantize_, quantize_, quantized_names
from .torchvision_ops import ensure_torchvision_importable

# users of bitcl.quantize_ / bitcl.fit bring torchvision models and datasets: with a CPU torch, PyPI's
# torchvision imports only after this (see torchvision_ops); cheap, idempotent, a no-op with a working build
ensure_torchvision_importable()

__all__ = ["BitConfig", "LayerReport", "QuantizationReport", "dequantize_", "ensure_torchvision_importable",
           "quantize_", "quantized_names"]
