"""The brevitas side of bitcl's quantised tensors, kept in one module.

brevitas defines the quantiser (:class:`FixedRangeWeightQuant`, used for
export) and the :class:`~brevitas.quant_tensor.IntQuantTensor` view of a
tensor's codes. The training hot path never calls brevitas (a brevitas layer
costs several times an ``nn.Linear`` call on small layers), and this module is
imported only when a view or an export is asked for (brevitas takes ~2 s to
import).
"""
from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():  # brevitas warns about optional kernels at import
    warnings.simplefilter("ignore")
    from brevitas.core.scaling import ScalingImplType
    from brevitas.nn import QuantConv2d, QuantLinear  # noqa: F401  (re-exported for export)
    from brevitas.quant.base import NarrowIntQuant
    from brevitas.quant.solver import WeightQuantSolver
    from brevitas.quant_tensor import IntQuantTensor


class FixedRangeWeightQuant(NarrowIntQuant, WeightQuantSolver):
    """Signed narrow-range per-tensor weight quantiser with a constant range.

    ``scale = scaling_const / (2^(N-1) - 1)``: bitcl's scale when
    ``scaling_const`` is the tensor's range (see ``quantizer.scale_for``).
    Set both per tensor with ``FixedRangeWeightQuant.let(bit_width=N, scaling_const=r)``.
    """

    scaling_impl_type = ScalingImplType.CONST
    scaling_per_output_channel = False
    restrict_scaling_type = "fp"
    bit_width = 8
    scaling_const = 1.0


def int_quant_tensor(codes: torch.Tensor, scale: float, bits: int) -> IntQuantTensor:
    """brevitas ``IntQuantTensor`` for ``codes`` with ``.int() == codes`` exactly.

    Above 22 bits a float32 ``value / scale`` can round to a neighbouring code,
    so the view is float64 there.
    """
    dtype = torch.float32 if bits <= 22 else torch.float64
    scale_t = torch.tensor(scale, dtype=dtype, device=codes.device)
    return IntQuantTensor(
        value=codes.to(dtype) * scale_t,
        scale=scale_t,
        zero_point=torch.zeros((), dtype=dtype, device=codes.device),
        bit_width=torch.tensor(float(bits), device=codes.device),
        signed=True,
        training=False,
    )
