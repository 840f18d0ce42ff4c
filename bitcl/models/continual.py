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

from .backbones import MLP, ConvNet, linear


class ContinualModel(nn.Module):
    def __init__(self, backbone: nn.Module, head_sizes: Sequence[int], setting: str, kind: str = "quant",
                 bits: int = DEFAULT_BITS):
        super().__init__()
        self.backbone = backbone
        self.setting = setting
        features = backbone.out_features
        if setting == "task":
            self.heads = nn.ModuleList(nn.Linear(features, n) for n in head_sizes)
        else:
            self.heads = nn.ModuleList([linear(kind, features, head_sizes[0], bits)])
        self.register_buffer("active_outputs", torch.tensor(head_sizes[0] if setting != "class" else 0))

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
        features = self.backbone(x)
        if isinstance(task, int):
            return self.logits(features, task, mask)
        if not self.multi_head:
            return self.logits(features, 0, mask)
        raise ConfigError("per-sample task ids need the engine's grouped loss; call per task instead")

    def backbone_parameters(self):
        """Named parameters of the backbone and shared heads (everything that tasks share)."""
        for name, param in self.named_parameters():
            if self.multi_head and name.startswith("heads."):
                continue
            yield name, param


def build_model(arch: str, input_shape: Sequence[int], head_sizes: Sequence[int], setting: str,
                kind: str = "quant", bits: int = DEFAULT_BITS, hidden: Sequence[int] = (1200,)) -> ContinualModel:
    """``arch`` "mlp" or "conv" with the scenario's heads."""
    if arch == "mlp":
        backbone = MLP(input_shape, hidden, kind, bits)
    elif arch == "conv":
        backbone = ConvNet(input_shape, kind, bits)
    else:
        raise ConfigError(f"unknown architecture {arch!r}; choose mlp or conv")
    return ContinualModel(backbone, head_sizes, setting, kind, bits)
