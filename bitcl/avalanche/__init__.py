"""bitcl's methods as Avalanche plugins (optional extra: ``pip install bitcl[avalanche]``).

Importing this package makes torchvision importable first (``bitcl.interop.torchvision_ops``),
so import it before ``avalanche`` when torch is a CPU build.
"""
from .plugins import (AFPlugin, BitclPlugin, BLIPPlugin, EWCPlugin, MASPlugin, MASXPlugin, REWCPlugin, SIBPlugin,
                      SIPlugin, SIUPlugin, SOSPlugin)

__all__ = ["AFPlugin", "BitclPlugin", "BLIPPlugin", "EWCPlugin", "MASPlugin", "MASXPlugin", "REWCPlugin",
           "SIBPlugin", "SIPlugin", "SIUPlugin", "SOSPlugin"]
