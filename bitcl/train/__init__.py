"""The supervised training loop, split by job: ``loop`` (the engine's batches, evaluation, the task
context), ``step`` (the one optimiser step of ``bitcl run`` and ``bitcl.fit``), ``task`` (one task:
train, consolidate, evaluate, checkpoint), ``resume`` (``--resume`` of every loop, ``bitcl rl``'s
too), ``rundir`` (run directory, lock, checkpoints), ``results`` (results.json and timing), and
``bitcl.distributed`` (process groups). ``bitcl.engine.run`` ties them together."""
