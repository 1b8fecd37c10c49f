"""sfh_pipeline: spatially resolved star-formation histories from MUSE + HST with a CNN."""

__version__ = "0.1.0"

from .predict import load_predictor  # noqa: F401

__all__ = ["__version__", "load_predictor"]
