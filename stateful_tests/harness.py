"""Calling a plug-in without letting it take the harness down.

Every call into an implementation goes through :class:`Guard`: it is journalled before it runs
(so a crash in native code still leaves the step on disk), bounded by a per-step timeout, and
its result type is checked.  Anything that goes wrong becomes a :class:`CheckFailure` with ID
``PLUGIN`` that names the step, which the runner reports like any other conformance failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from invariants.registry import PLUGIN, CheckFailure

#: Environment variable naming a file that receives one JSON line per call, flushed first.
JOURNAL_ENV = "VMCONFORM_JOURNAL"


class StepTimeout(BaseException):
    """Raised inside a plug-in call that overran; a BaseException so that a plug-in's own
    ``except Exception`` cannot swallow it."""


def _expire(signum: int, frame: object) -> None:
    raise StepTimeout


_HANDLER_INSTALLED: list[bool] = []


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt the body after ``seconds`` of wall time (main thread only; elsewhere the
    subprocess timeout of ``vmconform check`` is the backstop).

    The SIGALRM handler is installed once; each call only arms and disarms the timer, which
    keeps the guard cheap enough to wrap every call a step makes.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _HANDLER_INSTALLED or signal.getsignal(signal.SIGALRM) is not _expire:
        signal.signal(signal.SIGALRM, _expire)
        _HANDLER_INSTALLED[:] = [True]
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class Journal:
    """Append-only JSON lines, flushed before each call so a crash leaves the last step."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    @classmethod
    def from_env(cls) -> Journal:
        """The journal the worker process was told to keep, if any."""
        return cls(os.environ.get(JOURNAL_ENV))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        if self._file is not None:
            self._file.write(json.dumps(record, default=_journal_value) + "\n")
            self._file.flush()


def _journal_value(value: object) -> object:
    """What JSON cannot hold: bytes as hex (write data), anything else by its repr."""
    if isinstance(value, bytes | bytearray):
        return {"$bytes": value.hex()}
    return repr(value)


def describe_call(op: str, args: dict[str, Any]) -> str:
    """``free_pages(pfn=0x200, order=1, cpu=0)``."""
    shown = ", ".join(f"{k}={v:#x}" if k in ("pfn", "gfp_mask") and isinstance(v, int)
                      else f"{k}={v!r}" for k, v in args.items())
    return f"{op}({shown})"


@attrs.define
class Guard:
    """Wraps one implementation instance; every call is journalled, timed and type-checked."""

    impl: Any
    name: str
    timeout: float | None
    journal: Journal

    @classmethod
    def create(cls, factory: Callable[..., Any], config: Any, name: str,
               timeout: float | None, journal: Journal) -> Guard:
        """Boot the implementation under the same protection as any later call."""
        journal.write({"call": "boot", "impl": name, "config": config.name})
        impl = _protected(lambda: factory(config), f"{name} factory({config.name})", timeout)
        return cls(impl=impl, name=name, timeout=timeout, journal=journal)

    def call(self, op: str, args: dict[str, Any],
             check: Callable[[Any], str | None] | None = None) -> Any:
        """Run ``impl.op(**args)``; ``check`` returns a complaint about the result's type."""
        self.journal.write({"call": op, "args": args})
        where = f"{self.name}.{describe_call(op, args)}"
        method = getattr(self.impl, op, None)
        if method is None:
            raise CheckFailure(PLUGIN, f"{self.name} has no method {op!r} the contract requires")
        result = _protected(lambda: method(**args), where, self.timeout)
        if check is not None:
            complaint = check(result)
            if complaint:
                raise CheckFailure(PLUGIN, f"{where} returned {result!r}: {complaint}")
        return result


    def read(self, what: str, thunk: Callable[[], Any]) -> Any:
        """A read the harness makes of its own accord (a part's view, say): timed and turned
        into a PLUGIN failure like any call, so a part that hangs cannot hang the run."""
        return _protected(thunk, f"{self.name}.{what}", self.timeout)


def _protected(thunk: Callable[[], Any], where: str, timeout: float | None) -> Any:
    try:
        with deadline(timeout):
            return thunk()
    except StepTimeout:
        raise CheckFailure(PLUGIN, f"{where} did not return within {timeout} s") from None
    except CheckFailure:
        raise
    except Exception as exc:  # a plug-in may raise anything; that is the failure we report
        tail = "".join(traceback.format_exception(exc)[-3:]).rstrip()
        raise CheckFailure(PLUGIN, f"{where} raised {type(exc).__name__}: {exc}\n{tail}") from None


def is_int(value: Any) -> bool:
    """An int that is not a bool: ``True`` is not a pfn."""
    return isinstance(value, int) and not isinstance(value, bool)


def want_int(value: Any) -> str | None:
    """Result check for operations returning 0 or -errno."""
    return None if is_int(value) else f"the contract requires an int, not {type(value).__name__}"


def want_pfn_or_none(value: Any) -> str | None:
    """Result check for alloc_pages."""
    if value is None or is_int(value):
        return None
    return f"the contract requires an int pfn or None, not {type(value).__name__}"


def want_instance(kind: type) -> Callable[[Any], str | None]:
    """Result check for views."""
    def check(value: Any) -> str | None:
        if isinstance(value, kind):
            return None
        return f"the contract requires a {kind.__name__}, not {type(value).__name__}"
    return check


class GuardedImpl:
    """The implementation as checkers see it: attribute reads pass through, method calls go
    through the Guard, so a checker's ``impl.page(pfn)`` is journalled, timed and typed too."""

    def __init__(self, guard: Guard, checks: dict[str, Callable[[Any], str | None]]) -> None:
        self._guard = guard
        self._checks = checks

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._guard.impl, name)
        if not callable(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if args:
                names = value.__code__.co_varnames[1:] if hasattr(value, "__code__") else ()
                kwargs = {**dict(zip(names, args, strict=False)), **kwargs}
            return self._guard.call(name, kwargs, self._checks.get(name))

        return guarded
