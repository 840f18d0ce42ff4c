"""Importance estimators: one small module each, all returning a tensor per parameter."""
from .fisher import FISHER_KINDS, batch_fisher_sums
from .per_sample import layers_of, per_sample_power_sums

__all__ = ["FISHER_KINDS", "batch_fisher_sums", "layers_of", "per_sample_power_sums"]
