"""Joint training: each task trains on the union of all tasks seen so far (the upper bound)."""
from .base import Strategy, register


@register
class Joint(Strategy):
    name = "joint"
    summary = "trains on the union of the tasks seen so far (upper bound; memory grows with data)"

    def training_tasks(self, task_index: int) -> list[int]:
        return list(range(task_index + 1))

    def state_bytes(self) -> int:
        """The training data of the tasks seen, which joint training keeps."""
        seen = self.engine.task_index + 1
        tasks = self.engine.scenario.tasks[:seen]
        return sum(t.x_train.numel() * t.x_train.element_size() + t.y_train.numel() * t.y_train.element_size()
                   for t in tasks)
