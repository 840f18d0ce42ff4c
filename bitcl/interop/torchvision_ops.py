"""Make ``import torchvision`` (and so ``import avalanche``) work with a CPU-only torch.

The only torchvision wheels a pinned CPU torch can get from PyPI are CUDA builds: their
compiled ops (``torchvision/_C.so``) link ``libc10_cuda.so`` and fail to load. torchvision
then runs without its C++ ops, which its models, datasets and transforms do not need, except
that its module ``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` *unconditionally*, and that raises ``operator torchvision::nms does
not exist``. Declaring those two schemas first (the exact signatures of torchvision's
``csrc/ops/nms.cpp`` and ``csrc/ops/quantized/cpu/qnms_kernel.cpp``) lets the import finish;
the ops themselves stay unavailable and raise torchvision's own "Couldn't load custom C++
ops" if called. When the compiled ops do load (a matching CPU or CUDA build), nothing is
declared and torchvision is untouched.

This is the one place bitcl does it: call :func:`ensure_torchvision_importable` before the
first ``import torchvision`` or ``import avalanche`` (``bitcl.avalanche`` does).
"""
from __future__ import annotations

import importlib.util
import os

import torch

# the ops whose fake kernels torchvision registers whether or not its library loaded
SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library holding the declarations, kept alive for the process


def _compiled_ops_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(folder)):
        if name.startswith("_C.") and name.endswith((".so", ".pyd")):
            return os.path.join(folder, name)
    return None


def ensure_torchvision_importable() -> str:
    """Prepare torch so that torchvision imports; returns what was done.

    ``"absent"``: torchvision is not installed (nothing to do); ``"compiled"``: its C++ ops
    load, nothing declared; ``"declared"``: they do not load, the schemas in :data:`SCHEMAS`
    were declared (idempotent: a second call returns ``"declared"`` again).
    """
    global _library
    if _library is not None:
        return "declared"
    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return "compiled"  # already loaded by an earlier import of torchvision
    path = _compiled_ops_path()
    if importlib.util.find_spec("torchvision") is None:
        return "absent"
    if path is not None:
        try:
            torch.ops.load_library(path)  # what torchvision.extension does; a no-op when repeated
            return "compiled"
        except (OSError, RuntimeError):
            pass
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in SCHEMAS.values():
        _library.define(schema)
    return "declared"
