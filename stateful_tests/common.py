"""What every subsystem's state machine shares: its spec, its handles, its trace.

Each ``stateful_tests/<subsystem>_machine.py`` builds a :class:`ConformanceMachine` subclass
for one implementation, mode and machine configuration.  The shared parts live here so that
``vmconform`` can run, shrink, record and replay any of them the same way:

* rule ``foo`` is a thin Hypothesis wrapper around ``do_foo``, which records itself in the
  trace and does the work; replay calls ``do_foo`` directly, without Hypothesis;
* the state invariants live in ``invariants_hold`` (run after every step, never
  decorated again in a subclass: the base's ``@invariant`` already calls it);
* whatever a rule hands to a bundle is a :class:`Handle`, registered in :attr:`handles` by
  :meth:`new_handle`, and recorded in the trace by its id, so a replay resolves it again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition

from invariants.registry import PLUGIN, Check, CheckFailure, Kind, checks_for
from specs.machine import MachineConfig
from stateful_tests.harness import Guard, Journal
from stateful_tests.trace import Trace, set_current_trace

H = TypeVar("H", bound="Handle")
C = TypeVar("C", bound=enum.Enum)


@attrs.frozen
class MachineSpec:
    """Everything that distinguishes one generated machine class from another."""

    factory: Callable[..., Any]
    impl_name: str
    mode: str  # "lockstep" or "contract"
    config: MachineConfig
    enabled: frozenset[str]
    sweep_every: int = 20
    step_timeout: float | None = 10.0
    #: When known in advance, rules needing a capability the implementation lacks are left
    #: out of the machine (cheaper than a precondition evaluated before every step).
    capabilities: frozenset[enum.Enum] | None = None
    #: Every factory of the implementation, by subsystem: a subsystem built on another one
    #: (page tables on the page allocator) takes the implementation's own when it has one.
    factories: Mapping[str, Callable[..., Any]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Handle:
    """Something a rule was handed (a block, a mapping, an object); subclass per kind.

    Identity is the ``id``: two handles are never equal, even when their fields are, because
    the machine may legitimately hold the same address twice (a double free, say).
    """

    id: int


class ConformanceMachine(RuleBasedStateMachine):
    """The shared skeleton; a subsystem's ``make_<subsystem>_machine`` adds the rules."""

    spec: ClassVar[MachineSpec]

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.trace = Trace(impl=spec.impl_name, mode=spec.mode, preset=spec.config.name)
        set_current_trace(self.trace)
        self.handles: dict[int, Handle] = {}
        self.next_handle = 0

    def boot(self, capability: type[C], *args: Any) -> frozenset[C]:
        """Boot the implementation under test as ``factory(config, *args)``, guarded like
        every later call, into ``self.sut``; returns its declared capabilities.

        Capabilities that are not a frozenset of the subsystem's enum are a PLUGIN failure:
        the checks to skip are chosen by them, so a wrong value would silently skip checks.
        """
        spec = self.spec
        self.sut = Guard.create(lambda config: spec.factory(config, *args), spec.config,
                                spec.impl_name, spec.step_timeout, Journal.from_env())
        caps = getattr(self.sut.impl, "capabilities", None)
        if not isinstance(caps, frozenset) or not all(isinstance(c, capability) for c in caps):
            raise CheckFailure(PLUGIN, f"{spec.impl_name}.capabilities must be a frozenset of "
                                       f"{capability.__module__}.{capability.__qualname__}, "
                                       f"not {caps!r}")
        return caps

    def select_checks(self, subsystem: str, caps: frozenset[Any],
                      operations: tuple[str, ...]) -> None:
        """The enabled checks the implementation's capabilities allow, into
        ``self.state_checks`` and, per operation, ``self.step_checks``."""
        checks = [c for c in checks_for(subsystem)
                  if c.id in self.spec.enabled and c.applies_to(caps)]
        self.state_checks: list[Check] = [c for c in checks if c.kind is Kind.STATE]
        self.step_checks: dict[str, list[Check]] = {
            op: [c for c in checks if c.kind is Kind.STEP and op in c.ops] for op in operations}

    def new_handle(self, cls: type[H], **fields: Any) -> H:
        """A handle the trace can name and a replay can find again."""
        handle = cls(id=self.next_handle, **fields)
        self.handles[handle.id] = handle
        self.next_handle += 1
        return handle

    @invariant()
    def _after_every_step(self) -> None:
        self.invariants_hold()

    def invariants_hold(self) -> None:
        """The subsystem's state invariants (every machine overrides this); Hypothesis runs
        it after every step and replay calls it directly."""
        raise NotImplementedError


def when_capable(spec: MachineSpec, cap: enum.Enum,
                 caps_of: Callable[[Any], frozenset[enum.Enum]] = lambda m: m.caps,
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keep a rule only for implementations with the capability.

    When the capabilities are known before the class is built the rule is dropped outright;
    otherwise a precondition reads them from the booted machine (``caps_of``).
    """
    if spec.capabilities is not None:
        keep = cap in spec.capabilities
        return lambda fn: fn if keep else disabled(fn)
    return precondition(lambda self: cap in caps_of(self))


def disabled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A rule whose precondition is always false: Hypothesis never selects it."""
    return precondition(lambda self: False)(fn)


def identifier(name: str) -> str:
    """An implementation name made safe for a class name."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)
