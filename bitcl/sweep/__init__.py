"""``bitcl sweep SPEC.toml --out DIR``: grids of ``bitcl run`` over methods, seeds, benchmarks and
option values, with a choice of strengths on a validation hold-out, retries, resumption, and one
table per benchmark of mean ± 95 % interval over seeds (docs/sweeps.md)."""
from bitcl.sweep.runner import run_sweep
from bitcl.sweep.spec import RunSpec, Select, Spec, expand, load_spec

__all__ = ["RunSpec", "Select", "Spec", "expand", "load_spec", "run_sweep"]
