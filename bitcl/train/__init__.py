"""The continual training of every driver, split by job: ``runner`` (the task sequence of
``bitcl run``, ``bitcl.fit`` and ``bitcl rl``: resume, before-task / train / end-of-task,
evaluation, checkpoints, results), ``step`` (the one optimiser step), ``loop`` (the engine's
batches, evaluation, the task context), ``seeds`` (every random stream's seed), ``resume``
(``--resume``), ``rundir`` (run directory, lock, checkpoints), ``results`` (results.json and
timing), and ``bitcl.distributed`` (process groups). ``bitcl.engine.run`` ties them together.
"""
