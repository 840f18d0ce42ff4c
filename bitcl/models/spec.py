"""``ModelSpec``: the one typed description of a bitcl model.

It builds the model (:meth:`ModelSpec.build`), is stored in every checkpoint (``bitcl_progress.model``,
docs/contracts/checkpoint.md) and in packed files, and is read back strictly by
:meth:`ModelSpec.from_json`: an unknown key, a missing one, a wrong type or a value out of range
is refused with one line naming the file and the key. ``bitcl run`` (``Engine``), ``bitcl export``,
``bitcl pretrain`` and the checkpoint validator all go through it, so the defaults live here only.

Checkpoints written before the spec had ``width``, ``bn`` and ``dropout`` (and the run facts
``benchmark``...``class_order``) still load: :meth:`from_json` with ``legacy=True`` (a file
without digests, docs/contracts/checkpoint.md) fills those keys with the defaults those files
were built with.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from bitcl.errors import BitclError, CheckpointError
from bitcl.quant import DEFAULT_BITS

if TYPE_CHECKING:  # the model class is imported when a spec is built (models.continual imports nothing here)
    from .continual import ContinualModel

SETTINGS = ("task", "domain", "class", "data")
KINDS = ("quant", "float")
MIN_BITS, MAX_BITS = 2, 24
MAX_UNITS = 1 << 24          # a layer or head wider than this is not a bitcl model
MAX_INPUT_VALUES = 1 << 24   # values per sample


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a model without its data: backbone, heads, bit width, and the facts of the run
    (benchmark, seed, task count, permutation, class order) that export needs for preprocessing."""

    arch: str
    input_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    setting: str
    head_sizes: tuple[int, ...]
    backbone: str = "quant"
    bits: int = 20
    width: int = 0
    bn: str = "first-task"
    dropout: float = 0.0
    benchmark: Optional[str] = None
    seed: Optional[int] = None
    tasks: Optional[int] = None
    permuted: bool = False
    active_outputs: Optional[tuple[int, ...]] = None
    class_order: Optional[tuple[int, ...]] = None

    # keys every file has carried since the description was first stored
    REQUIRED = ("arch", "input_shape", "hidden", "setting", "head_sizes", "backbone", "bits")

    def build(self):
        """The :class:`~bitcl.models.ContinualModel` this spec describes (registered backbone + heads)."""
        from .continual import ContinualModel
        from .factory import BackboneArgs, LayerFactory, backbone_spec
        layers = LayerFactory(self.backbone, self.bits)
        args = BackboneArgs(tuple(self.input_shape), layers, tuple(self.hidden), self.width, self.bn, self.dropout)
        return ContinualModel(backbone_spec(self.arch).build(args), self.head_sizes, self.setting, layers.kind,
                              layers.bits)

    def to_json(self) -> dict:
        """The JSON object stored in checkpoints (lists, not tuples; every key present)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_json(cls, obj: Any, where: str, error: type[BitclError] = CheckpointError,
                  legacy: bool = False) -> "ModelSpec":
        """Parse and check a stored description; ``error`` (one line naming ``where`` and the key) if
        it is not one. Strict: unknown keys are refused, and so are missing ones unless ``legacy``
        (files without digests), where only :attr:`REQUIRED` must be present."""
        from bitcl.fields import Fields, int_list
        f = Fields(obj, where, error, "model")
        unknown = sorted(set(f.obj) - set(cls.keys()), key=str)
        if unknown:
            f.fail(f"unknown key {unknown[0]!r} (a model description has {', '.join(cls.keys())})")
        required = cls.REQUIRED if legacy else cls.keys()
        missing = [k for k in required if k not in f.obj]
        if missing:
            f.fail(f"missing key {missing[0]!r}")
        arch = f.string("arch")
        shape = int_list(f.obj["input_shape"], "model.input_shape", where, error, 1, 1 << 16, nonempty=True)
        if len(shape) > 3:
            f.fail(f"input_shape must have 1 to 3 dimensions, got {len(shape)}")
        if math.prod(shape) > MAX_INPUT_VALUES:
            f.fail(f"input_shape {shape} has more than {MAX_INPUT_VALUES:,} values per sample")
        hidden = int_list(f.obj["hidden"], "model.hidden", where, error, 1, MAX_UNITS)
        setting = f.string("setting", SETTINGS)
        heads = int_list(f.obj["head_sizes"], "model.head_sizes", where, error, 1, MAX_UNITS, nonempty=True)
        backbone = f.string("backbone", KINDS)
        bits = f.integer("bits", MIN_BITS, MAX_BITS)
        width = f.integer("width", 0, 1 << 16, required=False)
        from .factory import BN_POLICIES
        bn = f.string("bn", BN_POLICIES, required=False)
        dropout = f.number("dropout", 0.0, 1.0, required=False)
        benchmark = None if f.obj.get("benchmark") is None else f.string("benchmark")
        seed = None if f.obj.get("seed") is None else f.integer("seed", 0, 2 ** 63 - 1)
        tasks = None if f.obj.get("tasks") is None else f.integer("tasks", 1, 1 << 20)
        if tasks is not None and setting == "task" and len(heads) != tasks:
            f.fail(f"a task-incremental model has one head per task: {len(heads)} heads for {tasks} tasks")
        permuted = f.boolean("permuted", required=False)
        active = class_order = None
        if f.obj.get("active_outputs") is not None:
            active = int_list(f.obj["active_outputs"], "model.active_outputs", where, error, 0, sum(heads))
        if f.obj.get("class_order") is not None:
            class_order = int_list(f.obj["class_order"], "model.class_order", where, error, 0, MAX_UNITS)
        if permuted and (seed is None or tasks is None):
            f.fail("a permuted benchmark needs 'seed' and 'tasks' (they give each task's permutation)")
        return cls(arch, tuple(shape), tuple(hidden), setting, tuple(heads), backbone, bits,
                   0 if width is None else width, "first-task" if bn is None else bn,
                   0.0 if dropout is None else dropout, benchmark, seed, tasks, bool(permuted),
                   None if active is None else tuple(active), None if class_order is None else tuple(class_order))

    def check_size(self, available: int, where: str, error: type[BitclError] = CheckpointError) -> None:
        """Refuse, before building it, a model far larger than the ``available`` values a file holds:
        every width, and for the MLP every weight matrix, must fit, so a forged description cannot
        make bitcl allocate more than the file itself occupies."""
        widths = list(self.hidden) + list(self.head_sizes) + [self.width]
        if max(widths) > available:
            raise error(f"{where}: the model description asks for a layer of {max(widths):,} units but the file "
                        f"holds only {available:,} values")
        if self.arch == "mlp":
            sizes = [math.prod(self.input_shape)] + list(self.hidden) + [max(self.head_sizes)]
            needed = sum(a * b for a, b in zip(sizes, sizes[1:]))
            if needed > available:
                raise error(f"{where}: the model description needs {needed:,} weights but the file holds only "
                            f"{available:,} values")


def build_model(arch: str, input_shape: Sequence[int], head_sizes: Sequence[int], setting: str,
                kind: str = "quant", bits: int = DEFAULT_BITS, hidden: Sequence[int] = (1200,),
                width: int = 0, bn: str = "first-task", dropout: float = 0.0) -> "ContinualModel":
    """The registered backbone ``arch`` (``bitcl list``) with the scenario's heads
    (``bitcl.models.spec.ModelSpec(...).build()``, which holds the one set of defaults)."""
    return ModelSpec(arch, tuple(input_shape), tuple(hidden), setting, tuple(head_sizes), kind, bits, width, bn,
                     dropout).build()
