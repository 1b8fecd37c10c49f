"""The package's version, recorded in the stores and training sets it writes (``code_version``)."""

__version__ = "0.1.0"
