"""``bitcl pretrain``: train a backbone on source classes (training split only) and save it.

The backbone is saved as safetensors with metadata ``"bitcl_pretrained"`` describing it (the
model description ``model``, a :class:`~bitcl.models.spec.ModelSpec` as JSON, plus the classes,
epochs, data and source accuracy) and ``"bitcl_digests"`` (the SHA-256 of every tensor and of the
description, as in checkpoints: docs/contracts/checkpoint.md); ``--pretrained FILE``
(``bitcl.models.pretrained``) verifies them and starts any method from it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import save_file

from bitcl.checkpoint import DIGESTS, atomic_write, digests
from bitcl.config import RunConfig
from bitcl.engine import Engine
from bitcl.models.pretrained import load_pretrained  # noqa: F401  (the old import path)

PRETRAINED = "bitcl_pretrained"


def pretrain(config: RunConfig, out: str | Path) -> dict:
    """Train the backbone on ``config``'s data and classes (training split), save it to ``out``.

    ``out`` may not lie inside a run directory nor replace a run's file (``refuse_run_file``)."""
    from bitcl.train.rundir import refuse_run_file
    refuse_run_file(Path(out), "bitcl pretrain --out")
    config = dataclasses.replace(config, method="finetune", scenario="data", tasks=1, quiet=True, out=None,
                                 method_options={})
    engine = Engine(config)
    task = engine.scenario.tasks[0]
    engine.train_task(task)
    accuracy = engine.evaluate(task)
    tensors = {f"backbone.{k}": v.detach().cpu().contiguous() for k, v in engine.model.backbone.state_dict().items()}
    cfg, spec = engine.config, engine.spec
    meta = {"arch": spec.arch, "hidden": list(spec.hidden), "width": spec.width, "backbone": spec.backbone,
            "bits": spec.bits, "input_shape": list(spec.input_shape), "classes": engine.scenario.class_order,
            "epochs": cfg.epochs, "data": cfg.data, "source_test_accuracy": accuracy, "model": spec.to_json()}
    metadata = {PRETRAINED: json.dumps(meta)}
    metadata[DIGESTS] = json.dumps(digests(tensors, metadata))
    atomic_write(Path(out), lambda tmp: save_file(tensors, tmp, metadata=metadata), "pre-trained backbone")
    return meta
