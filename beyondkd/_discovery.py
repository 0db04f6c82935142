"""Import every module of a package so that its registration decorators run.

Registries (models, datasets, distillers) fill themselves when their modules are imported;
discovering the modules means a new architecture or method is one new file, with no central
list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str) -> None:
    """Import all direct submodules of ``package_name`` (skipping private ``_*`` ones)."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
