"""Joint training: each task trains on the union of all tasks seen so far (the upper bound)."""
import torch

from .base import Strategy, register
from .state import StateEntry


@register
class Joint(Strategy):
    name = "joint"
    summary = "trains on the union of the tasks seen so far (upper bound; memory grows with data)"
    needs = frozenset({"replay"})
    state_entries = (StateEntry("kept_bytes", "nonneg-int"),)

    def __init__(self, options, model, info):
        super().__init__(options, model, info)
        self.state["kept_bytes"] = torch.zeros((), dtype=torch.int64)

    def training_tasks(self, task_index: int) -> list[int]:
        return list(range(task_index + 1))

    def end_task(self, ctx) -> None:
        self.state["kept_bytes"] = self.state["kept_bytes"] + ctx.task_data_bytes()

    def state_bytes(self) -> int:
        """The training data of the tasks seen, which joint training keeps."""
        return int(self.state["kept_bytes"])
