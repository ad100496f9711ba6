"""ScalpEdge device runtime: torch-free segmentation, hair metrics and (later) sync.

Importing this package must stay cheap: no torch, no training code (a test enforces it).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
