"""``bitcl pretrain``: train a backbone on source classes (training split only) and save it.

The backbone is saved as safetensors with metadata ``"bitcl_pretrained"`` describing it;
``--pretrained FILE`` (``bitcl.models.pretrained``) starts any method from it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import save_file

from bitcl.checkpoint import atomic_write
from bitcl.config import RunConfig
from bitcl.engine import Engine
from bitcl.models.pretrained import load_pretrained  # noqa: F401  (the old import path)


def pretrain(config: RunConfig, out: str | Path) -> dict:
    """Train the backbone on ``config``'s data and classes (training split), save it to ``out``."""
    from bitcl.train.rundir import refuse_run_file
    refuse_run_file(Path(out), "bitcl pretrain --out")
    config = dataclasses.replace(config, method="finetune", scenario="data", tasks=1, quiet=True, out=None,
                                 method_options={})
    engine = Engine(config)
    task = engine.scenario.tasks[0]
    engine.train_task(task)
    accuracy = engine.evaluate(task)
    tensors = {f"backbone.{k}": v.detach().cpu().contiguous() for k, v in engine.model.backbone.state_dict().items()}
    cfg = engine.config
    meta = {"arch": cfg.arch, "hidden": cfg.hidden, "width": cfg.width, "backbone": cfg.backbone, "bits": cfg.bits,
            "input_shape": list(engine.scenario.input_shape), "classes": engine.scenario.class_order,
            "epochs": cfg.epochs, "data": cfg.data, "source_test_accuracy": accuracy}
    atomic_write(Path(out), lambda tmp: save_file(tensors, tmp, metadata={"bitcl_pretrained": json.dumps(meta)}))
    return meta
