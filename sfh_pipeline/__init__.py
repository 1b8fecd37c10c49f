"""sfh_pipeline: spatially resolved star-formation histories from MUSE + HST with a CNN."""

__version__ = "0.1.0"
