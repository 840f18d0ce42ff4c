"""bitcl: bit-level continual learning on N-bit quantised backbones."""
__version__ = "0.1.0"
