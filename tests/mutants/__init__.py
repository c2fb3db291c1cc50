"""Deliberately broken implementations: ``buddy`` holds the mutants (one or more per check ID,
each naming its ``target``), ``plugins`` the misbehaving plug-ins for the PLUGIN pseudo-check."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any


def mutants() -> list[Any]:
    """Every mutant class in this package: a class defined in one of its modules whose
    ``target`` is a non-empty string, in (module, source line) order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            target = getattr(cls, "target", None)
            if cls.__module__ == module.__name__ and isinstance(target, str) and target:
                found.append((module.__name__, inspect.getsourcelines(cls)[1], cls))
    return [cls for _module, _line, cls in sorted(found, key=lambda item: item[:2])]


def impl_name(cls: type) -> str:
    """The ``module:attribute`` name vmconform resolves to this class."""
    return f"{cls.__module__}:{cls.__qualname__}"
