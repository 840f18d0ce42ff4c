"""Kept so that existing imports work: the top-bits arithmetic lives in :mod:`bitcl.quant.codes`."""
from .codes import codes_from_top_bits, frozen_value, reduced_value, top_bits

__all__ = ["top_bits", "codes_from_top_bits", "reduced_value", "frozen_value"]
