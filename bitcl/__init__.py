"""bitcl: bit-level continual learning on N-bit quantised backbones."""
__version__ = "0.2.0"

# -- interop (issue 18): bitcl.quantize_, bitcl.BitConfig, bitcl.dequantize_, bitcl.fit ---------------
# imported on first use, so that `import bitcl` (and the CLI's start-up) stays light
_LAZY = {"quantize_": "bitcl.interop", "dequantize_": "bitcl.interop", "BitConfig": "bitcl.interop",
         "fit": "bitcl.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bitcl' has no attribute {name!r}")
# -- end interop ------------------------------------------------------------------------------------------
