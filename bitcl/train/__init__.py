"""The supervised training loop, split by job: ``loop`` (steps, evaluation, the task context),
``rundir`` (run directory, lock, checkpoints), ``results`` (results.json and timing), and
``bitcl.distributed`` (process groups). ``bitcl.engine.run`` ties them together."""
