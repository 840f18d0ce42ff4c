"""Fine-tuning: train each task in turn with no protection (the lower bound)."""
from .base import Strategy, register


@register
class Finetune(Strategy):
    name = "finetune"
    summary = "plain sequential training, no protection against forgetting (lower bound)"
    rl = True
