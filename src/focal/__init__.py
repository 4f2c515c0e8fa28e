"""focal: on-the-fly image transformations with face-aware cropping."""

__version__ = "0.1.0"

from focal.urls import url

__all__ = ["__version__", "url"]
