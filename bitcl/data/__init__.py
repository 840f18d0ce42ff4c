"""Data sources and continual-learning scenarios."""
from .benchmarks import BENCHMARKS, build_scenario
from .scenarios import SCENARIOS, Scenario, Task
from .sources import ArrayData, from_arrays, from_torch_datasets, load_source, stratified_split

__all__ = ["ArrayData", "BENCHMARKS", "SCENARIOS", "Scenario", "Task", "build_scenario", "from_arrays",
           "from_torch_datasets", "load_source", "stratified_split"]
