"""``bitcl analyze``: questions asked of trained models (importance measures, bits per task)."""
