"""Finding implementations by name.

An implementation is named in one of three ways: a built-in (``refmodel``, ``fastmodel``), a
name registered by an installed package under the ``vmconform.implementations`` entry-point
group, or a ``module:attribute`` path.  The object found is either an :class:`Implementation`
(factories per subsystem) or a single factory, which implements the subsystem its
``subsystem`` attribute names (``buddy`` when it has none).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import attrs

from stateful_tests.suites import SUITES, available_suites, load

ENTRY_POINT_GROUP = "vmconform.implementations"
#: The subsystems with a working state machine and both bundled models, in spec order.
SUBSYSTEMS: tuple[str, ...] = tuple(available_suites())


@attrs.frozen
class Implementation:
    """Factories, one per subsystem the implementation provides; each takes a MachineConfig."""

    name: str
    factories: Mapping[str, Callable[..., Any]]
    description: str = ""


def _lazy(path: str) -> Callable[..., Any]:
    def factory(*args: Any) -> Any:
        return load_object(path)(*args)
    factory.__qualname__ = factory.__name__ = path
    return factory


BUILTINS: dict[str, Implementation] = {
    "refmodel": Implementation("refmodel", {name: _lazy(SUITES[name].reference)
                                            for name in SUBSYSTEMS},
                               "the reference model: simple, obviously correct, slow"),
    "fastmodel": Implementation("fastmodel", {name: _lazy(SUITES[name].fast)
                                              for name in SUBSYSTEMS
                                              if SUITES[name].fast_available()},
                                "the numpy-backed implementation (the default under test)"),
}


class UnknownImplementation(LookupError):
    """No implementation by that name; the message says where it looked."""


def load_object(path: str) -> Any:
    """``package.module:attr.sub`` -> the object."""
    return load(path)


def _as_implementation(name: str, obj: Any) -> Implementation:
    if isinstance(obj, Implementation):
        return obj
    if callable(obj):
        subsystem = getattr(obj, "subsystem", "buddy")
        if not isinstance(subsystem, str):
            subsystem = "buddy"
        return Implementation(name, {subsystem: obj}, getattr(obj, "__doc__", "") or "")
    raise UnknownImplementation(f"{name} names {obj!r}, which is neither an Implementation "
                                f"nor a factory")


def registered() -> dict[str, str]:
    """Entry-point names -> their targets, from installed packages."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve(name: str) -> Implementation:
    """Find an implementation by built-in name, entry-point name or module:attribute path."""
    if name in BUILTINS:
        return BUILTINS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _as_implementation(name, ep.load())
    if ":" in name:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would: ./mypkg.py is importable
        try:
            return _as_implementation(name, load_object(name))
        except (ImportError, AttributeError) as exc:
            raise UnknownImplementation(f"cannot load {name}: {exc}") from exc
    known = ", ".join([*BUILTINS, *registered()])
    raise UnknownImplementation(f"no implementation {name!r}; known: {known}, or give "
                                f"module:factory")


def all_names() -> list[str]:
    """Built-ins then entry points."""
    return [*BUILTINS, *registered()]
