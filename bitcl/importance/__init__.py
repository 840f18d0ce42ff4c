"""Importance estimators: one small module each, all returning a tensor per parameter."""
from .entropy import batch_entropy, entropy_scores
from .fisher import FISHER_KINDS, batch_fisher_sums
from .mean import task_mean
from .output_sensitivity import OUTPUT_MEASURES, output_sensitivity_sums
from .path_integral import PathIntegral
from .per_sample import layers_of, per_sample_power_sums

__all__ = ["batch_entropy", "entropy_scores", "FISHER_KINDS", "OUTPUT_MEASURES", "PathIntegral", "batch_fisher_sums", "layers_of",
           "output_sensitivity_sums", "per_sample_power_sums", "task_mean"]
