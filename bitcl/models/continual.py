"""The continual model: a backbone plus its heads.

* task-incremental: one float ``nn.Linear`` head per task (each head is trained
  only on its own task, so it needs no protection);
* domain-, class- and data-incremental: one shared head, a Bit layer on a
  quantised backbone (it is shared across tasks, so bit freezing must protect it
  too). In class-incremental learning the head grows with the classes seen:
  outputs of classes not yet seen are masked to -inf, which gives them no
  gradient and no predictions; ``active_outputs`` is saved with the model.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from bitcl.errors import ConfigError
from bitcl.quant import DEFAULT_BITS

from .factory import LayerFactory


class ContinualModel(nn.Module):
    output_modules = ("heads",)  # the layers that map features to class scores (ANPyC never prunes them)

    def __init__(self, backbone: nn.Module, head_sizes: Sequence[int], setting: str, kind: str = "quant",
                 bits: int = DEFAULT_BITS):
        super().__init__()
        self.backbone = backbone
        self.setting = setting
        features = backbone.out_features
        if setting == "task":
            self.heads = nn.ModuleList(nn.Linear(features, n) for n in head_sizes)
        else:
            self.heads = nn.ModuleList([LayerFactory(kind, bits).linear(features, head_sizes[0])])
        self.register_buffer("active_outputs", torch.tensor(head_sizes[0] if setting != "class" else 0))
        # [backbones helper] per-task state (batch norm, --bn per-task) is sized here, and refused
        # outside task-incremental learning (bitcl/models/norm.py)
        if hasattr(backbone, "bind_tasks"):
            backbone.bind_tasks(setting, len(head_sizes))

    @property
    def multi_head(self) -> bool:
        return self.setting == "task"

    def set_active_outputs(self, n: int) -> None:
        self.active_outputs.fill_(n)

    def head_for(self, task: int) -> nn.Module:
        return self.heads[task] if self.multi_head else self.heads[0]

    def logits(self, features: torch.Tensor, task: int, mask: bool = True) -> torch.Tensor:
        out = self.head_for(task)(features)
        if mask and self.setting == "class":
            n = int(self.active_outputs)
            if n < out.shape[1]:
                out = out.masked_fill(torch.arange(out.shape[1], device=out.device) >= n, float("-inf"))
        return out

    def forward(self, x: torch.Tensor, task: Union[int, torch.Tensor] = 0, mask: bool = True) -> torch.Tensor:
        """Logits for ``task``'s head (class-incremental: outputs of unseen classes are -inf
        unless ``mask=False``); ``task`` may be a per-sample tensor of task ids."""
        if isinstance(task, int) and hasattr(self.backbone, "set_task"):
            self.backbone.set_task(task)  # [backbones helper] selects per-task batch norms (norm.py)
        features = self.backbone(x)
        if isinstance(task, int):
            return self.logits(features, task, mask)
        if not self.multi_head:
            return self.logits(features, 0, mask)
        raise ConfigError("per-sample task ids need the engine's grouped loss; call per task instead")

    def end_task(self, index: int) -> None:
        """Called by the training loop after task ``index``'s consolidation: the backbone's
        batch norms apply their continual policy (``--bn first-task`` freezes after task 0;
        bitcl/models/norm.py). [backbones helper]"""
        if hasattr(self.backbone, "end_task"):
            self.backbone.end_task(index)

    def backbone_parameters(self):
        """Named parameters of the backbone and shared heads (everything that tasks share)."""
        for name, param in self.named_parameters():
            if self.multi_head and name.startswith("heads."):
                continue
            yield name, param


