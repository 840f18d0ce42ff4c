"""ONNX export through brevitas's QCDQ flow (QuantizeLinear/Clip/DequantizeLinear).

The graph takes raw pixels (0..255 as float32, dynamic batch), applies the
task's permutation and the 1/255 scaling itself, and runs the network with its
quantised weights as integer initialisers dequantised by one scale per tensor.

Limit: brevitas's QCDQ export handles integer weights of at most 8 bits (ONNX
QuantizeLinear's int8), and a weight kept to its top B < N bits needs B + 1 bits
(see ``bitcl.quant.reduce``). So a model with N <= 8 exports exactly, and a wider
one exports with ``--bits 7`` or fewer; anything else is refused, never silently
changed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from bitcl.errors import BitclError
from bitcl.quant import BitConv2d, BitLinear
from bitcl.quant.codes import codes_from_top_bits, top_bits
from bitcl.train.rundir import refuse_run_file

from .checkpoint_model import load_checkpoint_model
from .packed import check_keep, check_task, input_permutation

ONNX_MAX_BITS = 8


class _Preprocess(nn.Module):
    def __init__(self, permutation: Optional[torch.Tensor], input_shape, pixel_scale: float = 255.0):
        super().__init__()
        self.register_buffer("permutation", permutation if permutation is not None else torch.arange(0))
        self.input_shape = list(input_shape)
        self.inverse_scale = 1.0 / pixel_scale

    def forward(self, raw):
        flat = raw.reshape(raw.shape[0], -1)
        if self.permutation.numel():
            flat = torch.index_select(flat, 1, self.permutation)
        return (flat * self.inverse_scale).reshape([-1] + self.input_shape)


class _Mask(nn.Module):
    """Class-incremental heads: outputs of classes not yet learned are -inf."""

    def __init__(self, outputs: int, active: int):
        super().__init__()
        self.register_buffer("dead", torch.arange(outputs) >= active)

    def forward(self, logits):
        return logits.masked_fill(self.dead, float("-inf"))


def _quant_layer(layer: nn.Module, keep: int) -> nn.Module:
    from bitcl.quant.brevitas_view import FixedRangeWeightQuant, QuantConv2d, QuantLinear
    weight, bias = {s.param_name: s for s in layer.bit_states()}["weight"], getattr(layer, "bias", None)
    n = layer.bits
    ints, multiplier = codes_from_top_bits(top_bits(weight.codes, n, keep), n, keep)
    width = n if keep == n else keep + 1
    scale = weight.scale * multiplier
    quant = FixedRangeWeightQuant.let(bit_width=width, scaling_const=scale * ((1 << (width - 1)) - 1))
    if isinstance(layer, BitLinear):
        out = QuantLinear(layer.in_features, layer.out_features, bias=bias is not None, weight_quant=quant)
    else:
        out = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                          bias=bias is not None, weight_quant=quant)
    with torch.no_grad():
        out.weight.copy_(ints.to(torch.float64).mul(scale).to(torch.float32))
        if bias is not None:
            b = {s.param_name: s for s in layer.bit_states()}["bias"]
            b_ints, b_mult = codes_from_top_bits(top_bits(b.codes, n, keep), n, keep)
            out.bias.copy_(b_ints.to(torch.float64).mul(b.scale * b_mult).to(torch.float32))
    return out


def _convert(module: nn.Module, keep: int) -> nn.Module:
    if isinstance(module, (BitLinear, BitConv2d)):
        return _quant_layer(module, keep)
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*[_convert(m, keep) for m in module])
    return module


def onnx_requirements(spec: dict, task: Optional[int], keep: int) -> list[str]:
    """What the export still needs, each with its reason (empty: it can be exported as asked)."""
    missing = []
    tasks = spec.get("tasks") or len(spec["head_sizes"])
    if task is None and spec["setting"] == "task":
        missing.append(f"--task T (a task-incremental model has one head per task: 0..{tasks - 1})")
    elif task is None and spec.get("permuted"):
        missing.append(f"--task T (each task of a permuted benchmark has its own input permutation: 0..{tasks - 1})")
    if spec["backbone"] == "quant":
        needed = spec["bits"] if keep == spec["bits"] else keep + 1
        if needed > ONNX_MAX_BITS:
            asked = "" if keep == spec["bits"] else f"; --bits {keep} needs {needed}-bit codes"
            missing.append(f"--bits {ONNX_MAX_BITS - 1} or fewer (brevitas QCDQ holds at most {ONNX_MAX_BITS}-bit "
                           f"integer weights and this model has {spec['bits']}-bit codes; keeping the top B < "
                           f"{spec['bits']} bits needs B + 1{asked})")
    return missing


def brevitas_model(checkpoint: str | Path, task: Optional[int], bits: Optional[int]) -> tuple[nn.Module, dict]:
    """The torch module that gets exported: preprocessing, brevitas layers, the task's head."""
    model, spec = load_checkpoint_model(checkpoint)
    task = check_task(spec, task)
    keep = check_keep(spec, bits)
    missing = onnx_requirements(spec, task, keep)
    if missing:  # every requirement at once, not one per attempt
        raise BitclError(f"ONNX export of this checkpoint needs {'; and '.join(missing)}")
    head = model.head_for(task or 0)
    parts = [_Preprocess(input_permutation(spec, task), spec["input_shape"]), _convert(model.backbone.layers, keep),
             _convert(head, keep) if isinstance(head, (BitLinear, BitConv2d)) else head]
    if spec["setting"] == "class":
        parts.append(_Mask(spec["head_sizes"][0], int(model.active_outputs)))
    return nn.Sequential(*parts).eval(), spec


def export_onnx(checkpoint: str | Path, out: str | Path, task: Optional[int] = None, bits: Optional[int] = None,
                check_inputs: Optional[torch.Tensor] = None) -> dict:
    """Export to ONNX; with onnxruntime installed, check its outputs against torch on ``check_inputs``."""
    import warnings
    refuse_run_file(out, "--out")  # before the (slow) brevitas import: nothing of a run is ever replaced
    try:
        import onnx  # noqa: F401
        with warnings.catch_warnings():  # brevitas warns about optional kernels at import
            warnings.simplefilter("ignore")
            from brevitas.export import export_onnx_qcdq
    except ImportError as error:
        raise BitclError(f"ONNX export needs the export extra (pip install 'bitcl[export]'): {error}") from None
    module, spec = brevitas_model(checkpoint, task, bits)
    pixels = 1
    for d in spec["input_shape"]:
        pixels *= d
    example = torch.zeros(2, pixels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(module, args=example, export_path=str(out), input_names=["pixels"], output_names=["logits"],
                         dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    summary = {"file": str(out), "file_bytes": out.stat().st_size}
    if check_inputs is not None:
        summary["max_abs_diff_vs_torch"] = onnx_max_diff(module, out, check_inputs)
    return summary


def onnx_max_diff(module: nn.Module, path: Path, raw: torch.Tensor) -> Optional[float]:
    """Largest |onnxruntime - torch| over ``raw`` inputs, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options)
    flat = raw.reshape(len(raw), -1).to(torch.float32)
    got = torch.from_numpy(session.run(None, {"pixels": flat.numpy()})[0])
    with torch.no_grad():
        want = module(flat)
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)):
        return float("inf")
    return float((got[finite] - want[finite]).abs().max()) if finite.any() else 0.0
