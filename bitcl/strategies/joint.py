"""Joint training: each task trains on the union of all tasks seen so far (the upper bound)."""
from .base import Strategy, register


@register
class Joint(Strategy):
    name = "joint"
    summary = "trains on the union of the tasks seen so far (upper bound; memory grows with data)"

    def training_tasks(self, task_index: int) -> list[int]:
        return list(range(task_index + 1))
