"""sfh_pipeline: spatially resolved star-formation histories from MUSE + HST with a CNN.

The modules live in one folder per layer: ``core``, ``ssp``, ``synth``, ``ml``, ``galaxy``
(docs/pipeline.md, "The code, by layer"). The flat names they had before the folders,
``sfh_pipeline.<module>``, still import, and give the very module object of its folder
(``sfh_pipeline.model is sfh_pipeline.ml.model``): see :data:`FLAT_NAMES`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import pkgutil
import sys

from .core.version import __version__
from .ml.predict import load_predictor  # noqa: F401

__all__ = ["__version__", "load_predictor"]


def _flat_names() -> dict[str, str]:
    """{flat name: dotted name} of every module of the layer folders, read from the folders.

    ``<folder>/cli.py`` has none: ``sfh_pipeline.cli`` is the root command line.
    """
    table: dict[str, str] = {}
    for folder in pkgutil.iter_modules(__path__):
        if not folder.ispkg:
            continue
        for module in pkgutil.iter_modules([os.path.join(__path__[0], folder.name)]):
            if module.ispkg or module.name == "cli":
                continue
            if module.name in table:
                raise ImportError(f"{module.name} is a module of two layer folders: its flat name would be ambiguous")
            table[module.name] = f"{__name__}.{folder.name}.{module.name}"
    return table


#: Old flat name -> the module's dotted name in its layer folder, e.g. "model" -> "sfh_pipeline.ml.model".
FLAT_NAMES = _flat_names()


class _FlatNameFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``sfh_pipeline.<flat name>`` as the module of its folder: the same object, imported
    once, registered in ``sys.modules`` under both names. It runs before the other finders (an
    editable install of another checkout would otherwise find that checkout's flat file)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in FLAT_NAMES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(FLAT_NAMES[spec.name.rpartition(".")[2]])
        spec.loader_state = module.__spec__  # the import system sets the module's __spec__ to spec next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # its own spec back: nothing to execute


def __getattr__(name: str):
    """``sfh_pipeline.model`` after ``import sfh_pipeline``: the module, imported on first use."""
    if name in FLAT_NAMES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# one finder, also when this file runs again (importlib.reload)
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__module__ != __name__]
sys.meta_path.insert(0, _FlatNameFinder())
