"""segweak: weakly supervised semantic segmentation experiments on aerial imagery."""

__version__ = "0.1.0"

__all__ = ["__version__"]
