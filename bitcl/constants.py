"""Constants that more than one part of bitcl checks against, each defined once.

This module imports nothing from bitcl, so every other module (the settings schema, the
quantised layers, checkpoint and export validation) can use it without an import cycle.
"""
from __future__ import annotations

# Bits per quantised weight: a float32 latent holds 24-bit integers exactly (bitcl.quant.codes).
MIN_BITS, MAX_BITS = 2, 24
BIT_RANGE = (MIN_BITS, MAX_BITS)

# What a backbone's weight layers are: N-bit Bit layers, or plain float layers (baselines).
LAYER_KINDS = ("quant", "float")

# How tasks relate (bitcl.data.scenarios): a head per task, one shared head, one growing head,
# the same classes in T chunks.
SCENARIOS = ("task", "domain", "class", "data")

# Seeds are non-negative int64 (torch.Generator.manual_seed's range).
MAX_SEED = 2**63 - 1

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("none", "cosine")
BN_POLICIES = ("first-task", "per-task", "train")
# --bn auto (the default) resolves per scenario to one of BN_POLICIES (bitcl.models.norm.resolve_policy)
BN_AUTO = "auto"
BN_SETTINGS = (BN_AUTO,) + BN_POLICIES

__all__ = ["BIT_RANGE", "BN_AUTO", "BN_POLICIES", "BN_SETTINGS", "LAYER_KINDS", "LR_SCHEDULES", "MAX_BITS",
           "MAX_SEED", "MIN_BITS", "OPTIMIZERS", "SCENARIOS"]
