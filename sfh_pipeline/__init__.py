"""sfh_pipeline: spatially resolved star-formation histories from MUSE + HST with a CNN."""

from .predict import load_predictor  # noqa: F401
from .version import __version__

__all__ = ["__version__", "load_predictor"]
