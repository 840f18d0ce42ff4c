"""bitcl's methods as Avalanche strategy plugins: bit-level freezing inside Avalanche's loop.

``Naive(model, optimizer, criterion, plugins=[BLIPPlugin(fisher_prior=1e-8)])`` on any Avalanche
benchmark trains with BLIP (Shi et al., CVPR 2021, arXiv 2105.04444); the regularisers are
EWC (Kirkpatrick et al., PNAS 2017), SI (Zenke et al., ICML 2017), MAS (Aljundi et al., ECCV
2018) and Benzing's variants (AISTATS 2022, arXiv 2006.06357): SIU, SIB, SOS, MASX, AF, rEWC.
Each plugin runs the very strategy file the CLI runs, through a
:class:`~bitcl.api_context.DataContext` built from the experience's dataset. Avalanche's own
loggers, evaluation plugins and metrics are untouched.

Hook mapping (Avalanche's SGD template -> bitcl strategy):

* ``before_training_exp`` -> ``before_task``      * ``before_backward`` -> ``loss += penalty()``
* ``after_backward``      -> ``after_backward``   * ``after_update`` -> bit projection, ``after_step``
* ``after_training_exp``  -> ``end_task`` (importance, anchors, bit freezing)

The task loss is Avalanche's ``criterion`` (the mean cross-entropy of ``Naive``, which is
bitcl's loss). Importance is computed on the experience's training data with the model's
outputs for the experience's task label (``avalanche_forward``), per sample and exactly, as in
``bitcl run``. Methods that need services Avalanche's loop cannot give (ANPyC's retraining,
joint's replay, DLCFT's linearised model) are refused with ConfigError.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

from bitcl.interop.torchvision_ops import ensure_torchvision_importable

ensure_torchvision_importable()  # before avalanche imports torchvision (see that module)

from avalanche.benchmarks.utils.dataset_traversal_utils import single_flat_dataset  # noqa: E402
from avalanche.benchmarks.utils.transforms import TupleTransform  # noqa: E402
from avalanche.models import MultiTaskModule  # noqa: E402
from avalanche.models.utils import avalanche_forward  # noqa: E402
from avalanche.training.plugins import SupervisedPlugin  # noqa: E402

from bitcl.api_context import DataContext  # noqa: E402
from bitcl.errors import ConfigError  # noqa: E402
from bitcl.quant import bit_states  # noqa: E402
from bitcl.train.results import bit_capacity  # noqa: E402
from bitcl.strategies import RunInfo, Strategy, check_supported, get_strategy, make_options  # noqa: E402

AVALANCHE_SERVICES = frozenset({"independent_gradient"})


class BitclPlugin(SupervisedPlugin):
    """Any bitcl method (``bitcl list``) as an Avalanche ``SupervisedPlugin``.

    ``options`` are the method's options (``fisher_prior=1e-8``, ``c=100.0``...), validated as the
    CLI validates its flags. ``seed`` seeds the importance subsets and label sampling (the CLI's
    rule: one stream per purpose and experience). ``num_tasks`` is only informative.
    """

    method: str = ""

    def __init__(self, method: Optional[str] = None, *, seed: int = 0, num_tasks: int = 0,
                 scenario: str = "task", **options):
        super().__init__()
        self.cls = get_strategy(method or self.method)
        check_supported(self.cls, AVALANCHE_SERVICES, "an Avalanche plugin")
        if self.cls.loss is not Strategy.loss:
            raise ConfigError(f"method {self.cls.name!r} replaces the task loss; Avalanche's criterion cannot "
                              "carry it (use bitcl.fit)")
        if scenario not in self.cls.scenarios:
            raise ConfigError(f"method {self.cls.name!r} does not support the {scenario!r} scenario")
        self.options = make_options(self.cls, options)
        self.seed, self.num_tasks, self.scenario = seed, num_tasks, scenario
        self.strategy: Optional[Strategy] = None
        self.ctx: Optional[DataContext] = None
        self._task_labels_seen: set[int] = set()

    def _bitcl_strategy(self, strategy) -> Strategy:
        """The bitcl strategy for Avalanche's model, built at the first experience."""
        if self.strategy is None or self.strategy.model is not strategy.model:
            if self.cls.requires_quantized and not any(True for _ in bit_states(strategy.model)):
                raise ConfigError(f"method {self.cls.name!r} needs Bit layers: call "
                                  "bitcl.quantize_(model, BitConfig(...)) before building the Avalanche strategy")
            info = RunInfo(self.num_tasks, self.scenario, torch.device(strategy.device))
            self.strategy = self.cls(self.options, strategy.model, info)
        return self.strategy

    # -- Avalanche hooks ------------------------------------------------------------------
    def before_training_exp(self, strategy, **kwargs):
        bitcl_strategy = self._bitcl_strategy(strategy)
        experience, model = strategy.experience, strategy.model
        labels = experience.task_labels
        if len(labels) != 1:
            raise ConfigError(f"experience {experience.current_experience} mixes task labels {labels}; "
                              "bitcl's importance needs one task (head) per experience")
        task_label = labels[0]
        self._check_one_head_per_task(model, experience, task_label)

        def forward(x):
            return avalanche_forward(model, x, torch.full((len(x),), task_label, dtype=torch.long))

        dataset = experience.dataset
        # the experience's items as plain tensors when they are a TensorDataset's rows unchanged: the
        # importance reads whole batches by index instead of one Avalanche __getitem__ per item (the
        # same values, so the same importance to the last bit)
        data = _tensor_rows(dataset) or DataLoader(dataset, batch_size=strategy.train_mb_size,
                                                   collate_fn=getattr(dataset, "collate_fn", None))
        self.ctx = DataContext(model, data, strategy.clock.train_exp_counter, bitcl_strategy.info, seed=self.seed,
                               forward=forward, strategy=bitcl_strategy, batch_size=strategy.train_mb_size)
        bitcl_strategy.before_task(self.ctx)

    def _check_one_head_per_task(self, model, experience, task_label: int) -> None:
        """ConfigError for a single-head model in a task-incremental stream (``scenario="task"``, the
        default): Avalanche routes task labels only through a ``MultiTaskModule``, so every task would
        share one output layer and each new task would overwrite the old tasks' outputs (measured: 0.0
        accuracy on every old experience, silently). Checked before the first experience when the
        benchmark declares its task labels, else at the first experience with a new label."""
        if self.scenario != "task" or isinstance(model, MultiTaskModule):
            return
        self._task_labels_seen.add(int(task_label))
        labels = self._task_labels_seen | _declared_task_labels(experience)
        if len(labels) > 1:
            raise ConfigError(
                f"{type(self).__name__}: the stream has task labels {sorted(labels)} but the model "
                f"({type(model).__name__}) has one shared head (not an avalanche MultiTaskModule), so old "
                "experiences would be scored by the newest task's outputs; use a multi-head model (e.g. "
                "avalanche.models.MTSimpleMLP, or a MultiTaskModule whose classifier is a MultiHeadClassifier), "
                "or pass scenario='domain' to train one shared head on purpose")

    def before_backward(self, strategy, **kwargs):
        penalty = self.strategy.penalty()
        if penalty is not None:
            strategy.loss = strategy.loss + penalty

    def after_backward(self, strategy, **kwargs):
        self.strategy.after_backward(self.ctx)

    def after_update(self, strategy, **kwargs):
        self.ctx.project()  # frozen bits never change, whatever the optimiser did
        self.strategy.after_step(self.ctx)

    def after_training_exp(self, strategy, **kwargs):
        self.strategy.end_task(self.ctx)

    # -- reading the state ---------------------------------------------------------------------
    def capacity(self) -> float:
        """Fraction of all bits of the model's quantised weights that are frozen (results.json's)."""
        measured = bit_capacity(self.strategy.model) if self.strategy else None
        return measured[0] if measured else 0.0


def _tensor_rows(dataset) -> Optional[TensorDataset]:
    """The ``(input, label)`` items of an Avalanche dataset as one TensorDataset, when every item is a
    row of a single TensorDataset under no transform (``tensors_benchmark``, or a dataset made from
    tensors) and the default collation; else None (the items are read one by one).

    Found through Avalanche's own traversal (``single_flat_dataset``: the leaf dataset, the item
    indices and the transforms on the way); three items are then read the ordinary way and must
    equal their rows, so a dataset this reading would misread falls back to item-wise reading."""
    if getattr(dataset, "collate_fn", default_collate) not in (None, default_collate):
        return None
    try:
        flat = single_flat_dataset(dataset)
    except Exception:  # noqa: BLE001 - a structure Avalanche's traversal does not know: read item-wise
        return None
    if flat is None:
        return None
    leaf, indices, transforms = flat
    if not isinstance(leaf, TensorDataset) or len(leaf.tensors) < 2 or len(indices) != len(dataset) or not indices:
        return None
    if not all(isinstance(t, TupleTransform) and all(f is None for f in t.transforms) for t in transforms):
        return None
    if leaf.tensors[1].dtype.is_floating_point or leaf.tensors[1].dtype == torch.bool:
        return None  # item-wise reading gives the DataError that names such labels
    first = indices[0]
    if indices == list(range(first, first + len(indices))):  # one block of rows (tensors_benchmark): a view
        rows = TensorDataset(leaf.tensors[0][first:first + len(indices)], leaf.tensors[1][first:first + len(indices)])
    else:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        rows = TensorDataset(leaf.tensors[0][idx], leaf.tensors[1][idx])
    for i in {0, len(rows) // 2, len(rows) - 1}:
        item, row = dataset[i], rows[i]
        if not (torch.is_tensor(item[0]) and item[0].shape == row[0].shape and torch.equal(item[0], row[0])
                and int(item[1]) == int(row[1])):
            return None
    return rows


def _declared_task_labels(experience) -> set[int]:
    """The task labels of the whole stream when the benchmark declares them (classic Avalanche
    benchmarks: ``benchmark.task_labels``, a list per experience); else none known yet."""
    try:
        declared = experience.benchmark.task_labels
        return {int(label) for labels in declared for label in labels}
    except Exception:  # noqa: BLE001 - benchmarks without the attribute, or masked in this mode
        return set()


def _named(method: str, doc: str) -> type[BitclPlugin]:
    cls = type(f"{method.upper()}Plugin", (BitclPlugin,), {"method": method, "__doc__": doc})
    cls.__init__ = _fixed_method_init
    return cls


def _fixed_method_init(self, *, seed: int = 0, num_tasks: int = 0, scenario: str = "task", **options):
    BitclPlugin.__init__(self, type(self).method, seed=seed, num_tasks=num_tasks, scenario=scenario, **options)


class BLIPPlugin(BitclPlugin):
    """BLIP: freeze each weight's most significant bits by Fisher information gain (CVPR 2021).
    Needs a model with Bit layers (``bitcl.quantize_``). Options: ``bitcl run --method blip --help``."""

    method = "blip"

    def __init__(self, *, seed: int = 0, num_tasks: int = 0, scenario: str = "task", **options):
        super().__init__("blip", seed=seed, num_tasks=num_tasks, scenario=scenario, **options)


EWCPlugin = _named("ewc", "bitcl's EWC: per-sample Fisher (exact by default), separate or online (PNAS 2017).")
SIPlugin = _named("si", "bitcl's SI: path integral of -g·Δθ over every step, Ω = ω / (Δ² + ξ) (ICML 2017).")
MASPlugin = _named("mas", "bitcl's MAS: per-sample |∂||softmax||² / ∂θ| (ECCV 2018).")
SIUPlugin = _named("siu", "SIU: SI with an independent minibatch gradient (Benzing, AISTATS 2022).")
SIBPlugin = _named("sib", "SIB: the minibatch-noise bias of SI alone (Benzing, AISTATS 2022).")
SOSPlugin = _named("sos", "SOS: sqrt of a running mean of squared gradient noise (Benzing, AISTATS 2022).")
MASXPlugin = _named("masx", "MASX: MAS on the largest softmax output (Benzing, AISTATS 2022).")
AFPlugin = _named("af", "AF: the absolute Fisher E Σ_y p_y |∂ log p_y / ∂θ| (Benzing, AISTATS 2022).")
REWCPlugin = _named("rewc", "rEWC: EWC with sqrt(Fisher) as importance (Benzing, AISTATS 2022).")
