"""Quantised layers with per-bit freeze masks (BLIP, arXiv 2105.04444)."""
from .codes import MAX_BITS, MIN_BITS, check_bits, check_codes, max_code, scale_for
from .layers import DEFAULT_BITS, DEFAULT_RANGE_FACTOR, BitConv2d, BitLinear
from .state import BitState, bit_states, project_, project_latents_

__all__ = ["BitLinear", "BitConv2d", "BitState", "bit_states", "project_", "project_latents_", "check_bits", "check_codes",
           "max_code", "scale_for", "MIN_BITS", "MAX_BITS", "DEFAULT_BITS", "DEFAULT_RANGE_FACTOR"]
