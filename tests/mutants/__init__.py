"""Deliberately broken implementations: ``buddy`` holds the mutants (one or more per check ID,
each naming its ``target``), ``plugins`` the misbehaving plug-ins for the PLUGIN pseudo-check."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, ClassVar

#: (module, global name) -> the broken copy used instead
Patches = Mapping[tuple[ModuleType, str], Callable[..., Any]]


@contextlib.contextmanager
def swapped(patches: Patches) -> Iterator[None]:
    """Each (module, name) global replaced by its broken copy while the body runs, and the
    original put back afterwards, even on an exception: refmodel itself is never edited."""
    saved = {key: getattr(*key) for key in patches}
    try:
        for (module, name), broken in patches.items():
            setattr(module, name, broken)
        yield
    finally:
        for (module, name), original in saved.items():
            setattr(module, name, original)


class PatchedOperations:
    """Mixin: the contract operations named in ``operations`` run inside ``_patched()``, so
    a mutant's broken copies apply to what the machine drives and never to its boot."""

    operations: ClassVar[tuple[str, ...]] = ()

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in type(self).operations and getattr(type(self), "patches", None):
            patched = super().__getattribute__("_patched")

            @functools.wraps(value)
            def call(*args: Any, **kwargs: Any) -> Any:
                with patched():
                    return value(*args, **kwargs)

            return call
        return value


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
