"""The buddy-allocator state machine, in lockstep and contract modes.

:func:`make_buddy_machine` builds a :class:`RuleBasedStateMachine` subclass for one
implementation, mode and machine configuration.  Every step goes through :meth:`step`: the
plug-in call is guarded, the reference model (lockstep) runs the same call, results and views
are compared, the operation rules judge the step against the caller's ledger, and the state
invariants run after it (page-level ones every ``sweep_every`` steps and at teardown).

Every rule invocation is recorded in :attr:`BuddyMachineBase.trace`, which is what a failure's
reproducer replays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    consumes,
    multiple,
    precondition,
    rule,
)

from invariants.buddy_rules import compound_owner, gfp_nonsense
from invariants.ledger import Ledger
from invariants.registry import LOCKSTEP, CheckFailure, Cost
from invariants.render import free_area_table, strip_around
from invariants.snapshot import BuddySnapshot, BuddyStep
from refmodel.buddy import RefBuddy
from specs.buddy import BuddyView, Capability, PageInfo, PageState
from specs.gfp import GFP_HIGHUSER_MOVABLE, GfpFlag
from specs.machine import MAX_ORDER
from stateful_tests import strategies
from stateful_tests.common import (
    ConformanceMachine,
    Handle,
    MachineSpec,
    identifier,
    when_capable,
)
from stateful_tests.harness import (
    GuardedImpl,
    describe_call,
    want_instance,
    want_int,
    want_pfn_or_none,
)

MAX_SPLIT_ORDER = 4
EXHAUST_LIMIT = 64

RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "alloc_pages": want_pfn_or_none,
    "free_pages": want_int,
    "get_page": want_int,
    "put_page": want_int,
    "split_page": want_int,
    "drain_pages": want_int,
}
OPERATIONS = tuple(RESULT_CHECKS)
VIEW_CHECKS: dict[str, Callable[[Any], str | None]] = {
    **RESULT_CHECKS,
    "view": want_instance(BuddyView),
    "page_state": want_instance(PageState),
    "page": lambda value: None if value is None or isinstance(value, PageInfo) else
    f"the contract requires a PageInfo or None, not {type(value).__name__}",
}


@attrs.define(eq=False)
class Block(Handle):
    """A block the machine was handed; rules pick from these, the ledger says what is true."""

    pfn: int
    order: int

    def __repr__(self) -> str:
        return f"b{self.id}"


class BuddyMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_buddy_machine` adds the rules."""

    spec: ClassVar[MachineSpec]
    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.ledger = Ledger()
        self.freed: list[Block] = []
        self.steps = 0
        self.last_sweep = -spec.sweep_every
        caps = self.boot(Capability)
        self.caps: frozenset[Capability] = caps
        self.checked_impl = GuardedImpl(self.sut, VIEW_CHECKS)
        self.ref = RefBuddy(spec.config) if spec.mode == "lockstep" else None
        self.select_checks("buddy", caps, OPERATIONS)
        self.view = self._sut_view()
        self.ref_view = self.ref.view() if self.ref is not None else None
        self._compare_views()

    # -- the step ------------------------------------------------------------------------------

    def step(self, op: str, **args: int) -> Any:
        """One call, in both models when in lockstep, judged by every enabled rule."""
        before, ledger_before = self.view, self.ledger.copy()
        result = self.sut.call(op, args, RESULT_CHECKS[op])
        if self.ref is not None:
            expected = getattr(self.ref, op)(**args)
            if result != expected and LOCKSTEP in self.spec.enabled:
                self._fail(LOCKSTEP, f"{describe_call(op, args)}: {self.spec.impl_name} "
                                     f"returned {_show(result)}, refmodel returned "
                                     f"{_show(expected)}", args, result)
        self.view = self._sut_view()
        if self.ref is not None:
            self.ref_view = self.ref.view()
            self._compare_views(op, args)
        record = BuddyStep(op=op, args=args, result=result, before=before, after=self.view,
                           ledger=ledger_before, impl=self.checked_impl)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems), args, result)
        self._update_ledger(op, args, result)
        self.steps += 1
        return result

    def _update_ledger(self, op: str, args: dict[str, int], result: Any) -> None:
        """The ledger follows what the implementation claims; the rules judge the claims."""
        if op == "alloc_pages":
            if result is not None and result not in self.ledger.held:
                order, mask = args["order"], args["gfp_mask"]
                self.ledger.on_alloc(result, order, bool(mask & GfpFlag.COMP) and order > 0)
        elif result == 0 and op in ("free_pages", "get_page", "put_page", "split_page"):
            pfn = args["pfn"]
            head = pfn if op in ("free_pages", "split_page") else compound_owner(self.ledger, pfn)
            if head is None or head not in self.ledger.held:
                return
            if op == "get_page":
                self.ledger.on_get(head)
            elif op == "split_page":
                self.ledger.on_split(head)
            else:
                self.ledger.on_put(head)

    # -- views and comparison ------------------------------------------------------------------

    def _sut_view(self) -> BuddyView:
        view: BuddyView = self.sut.call("view", {}, want_instance(BuddyView))
        return view

    def _compare_views(self, op: str = "boot", args: dict[str, int] | None = None) -> None:
        if self.ref_view is None or LOCKSTEP not in self.spec.enabled:
            return
        difference = view_difference(self.ref_view, self.view)
        if difference:
            self._fail(LOCKSTEP, f"after {describe_call(op, args or {})} the views differ: "
                                 f"{difference}", args or {}, None)

    def _compare_pages(self, ref: BuddySnapshot, sut: BuddySnapshot) -> None:
        if LOCKSTEP not in self.spec.enabled or Capability.PAGE_STATE not in self.caps:
            return
        difference = page_state_difference(ref, sut)
        if difference:
            self._fail(LOCKSTEP, f"struct page state differs: {difference}", {}, None)

    # -- invariants ----------------------------------------------------------------------------

    def run_state_checks(self, sweep: bool) -> None:
        """State invariants on the implementation, and on refmodel in lockstep.

        While LOCKSTEP is enabled the two views (and, on sweeps, page states) have just been
        compared equal, so the checkers' verdicts on refmodel would repeat those on the
        implementation; they are only run separately once LOCKSTEP has been set aside.
        """
        snaps = [("", BuddySnapshot(impl=self.checked_impl, view=self.view, ledger=self.ledger))]
        if self.ref is not None and self.ref_view is not None and (
                sweep or LOCKSTEP not in self.spec.enabled):
            snaps.append(("refmodel: ", BuddySnapshot(impl=self.ref, view=self.ref_view,
                                                      ledger=self.ledger)))
        for prefix, snap in snaps:
            if prefix and LOCKSTEP in self.spec.enabled:
                continue  # compared equal to the implementation's snapshot below
            for check in self.state_checks:
                if check.cost is Cost.PAGES and not sweep:
                    continue
                problems = list(check.fn(snap))
                if problems:
                    self._fail(check.id, f"{prefix}{check.title}:\n  " + "\n  ".join(problems),
                               {}, None)
        if sweep and len(snaps) == 2:
            self._compare_pages(snaps[1][1], snaps[0][1])

    def invariants_hold(self) -> None:
        """After every step; page-level checks every sweep_every steps."""
        sweep = self.steps - self.last_sweep >= self.spec.sweep_every
        if sweep:
            self.last_sweep = self.steps
        self.run_state_checks(sweep=sweep)

    def teardown(self) -> None:
        """A final sweep, so a page-level problem in a short run is still caught."""
        if hasattr(self, "sut"):
            self.run_state_checks(sweep=True)

    # -- failure reporting ---------------------------------------------------------------------

    def _fail(self, check_id: str, message: str, args: dict[str, int], result: Any) -> None:
        pfn = args.get("pfn", result if isinstance(result, int) else None)
        picture = "free areas after the step:\n" + free_area_table(self.view)
        if isinstance(pfn, int):
            picture += "\npages around the pfn:\n" + strip_around(self.view, self.ledger, pfn)
        raise CheckFailure(check_id, f"{message}\n{picture}")

    # -- rule bodies (the rules themselves are attached by make_buddy_machine) -----------------

    def new_block(self, pfn: int, order: int) -> Block:
        """A handle for a block the machine now holds."""
        return self.new_handle(Block, pfn=pfn, order=order)

    def do_alloc(self, gfp_mask: int, order: int, cpu: int) -> Any:
        """alloc_pages; the block joins the bundle when one comes back."""
        self.trace.rule("alloc", gfp_mask=gfp_mask, order=order, cpu=cpu)
        pfn = self.step("alloc_pages", gfp_mask=gfp_mask, order=order, cpu=cpu)
        if pfn is None or pfn not in self.ledger.held:
            return multiple()
        return self.new_block(pfn, self.ledger.held[pfn].order)

    def do_free(self, block: Block, cpu: int) -> Any:
        """free_pages of a block the machine holds, at its order."""
        self.trace.rule("free", block=block, cpu=cpu)
        self.step("free_pages", pfn=block.pfn, order=block.order, cpu=cpu)
        return self._still_held(block)

    def do_free_again(self, index: int) -> None:
        """Free something already freed: a double free unless the pfn was handed out again."""
        block = self.freed[index % len(self.freed)]
        self.trace.rule("free_again", index=index)
        self.step("free_pages", pfn=block.pfn, order=block.order, cpu=0)

    def do_free_wrong_order(self, block: Block, delta: int) -> None:
        """free_pages with the order off by one."""
        self.trace.rule("free_wrong_order", block=block, delta=delta)
        self.step("free_pages", pfn=block.pfn, order=block.order + delta, cpu=0)

    def do_get(self, block: Block, offset: int) -> None:
        """get_page on the head or a page inside the block."""
        self.trace.rule("get", block=block, offset=offset)
        self.step("get_page", pfn=block.pfn + offset % (1 << block.order))

    def do_put(self, block: Block, offset: int, cpu: int) -> Any:
        """put_page on the head or a page inside the block."""
        self.trace.rule("put", block=block, offset=offset, cpu=cpu)
        self.step("put_page", pfn=block.pfn + offset % (1 << block.order), cpu=cpu)
        return self._still_held(block)

    def do_split(self, block: Block) -> Any:
        """split_page; success turns one block into 2**order order-0 blocks.

        Blocks above MAX_SPLIT_ORDER are left alone: splitting 1024 pages only makes every
        later step slower without reaching any state a smaller split does not.
        """
        if block.order > MAX_SPLIT_ORDER:
            return block
        self.trace.rule("split", block=block)
        result = self.step("split_page", pfn=block.pfn, order=block.order)
        if result != 0 or block.order == 0:
            return self._still_held(block)
        pages = [self.new_block(pfn, 0) for pfn in range(block.pfn, block.pfn + (1 << block.order))
                 if pfn in self.ledger.held]
        return multiple(*pages)

    def do_drain(self, cpu: int) -> None:
        """drain_pages on one CPU."""
        self.trace.rule("drain", cpu=cpu)
        self.step("drain_pages", cpu=cpu)

    def do_bad_alloc(self, gfp_mask: int, order: int, cpu: int) -> Any:
        """alloc_pages with anything at all."""
        self.trace.rule("bad_alloc", gfp_mask=gfp_mask, order=order, cpu=cpu)
        pfn = self.step("alloc_pages", gfp_mask=gfp_mask, order=order, cpu=cpu)
        if pfn is None or pfn not in self.ledger.held or gfp_nonsense(gfp_mask):
            return multiple()
        return self.new_block(pfn, self.ledger.held[pfn].order)

    def do_bad_call(self, op: str, pfn: int, order: int, cpu: int) -> None:
        """free_pages, get_page, put_page, split_page or drain_pages on arbitrary arguments."""
        self.trace.rule("bad_call", op=op, pfn=pfn, order=order, cpu=cpu)
        args = {"free_pages": {"pfn": pfn, "order": order, "cpu": cpu},
                "get_page": {"pfn": pfn}, "put_page": {"pfn": pfn, "cpu": cpu},
                "split_page": {"pfn": pfn, "order": order}, "drain_pages": {"cpu": cpu}}[op]
        self.step(op, **args)

    def do_exhaust(self, gfp_mask: int, order: int, cpu: int) -> Any:
        """Allocate until the allocator says no (at most EXHAUST_LIMIT times): the quickest way
        to the watermarks, the fallback lists and the highatomic reserve."""
        self.trace.rule("exhaust", gfp_mask=gfp_mask, order=order, cpu=cpu)
        got = []
        for _ in range(EXHAUST_LIMIT):
            pfn = self.step("alloc_pages", gfp_mask=gfp_mask, order=order, cpu=cpu)
            if pfn is None or pfn not in self.ledger.held:
                break
            got.append(self.new_block(pfn, self.ledger.held[pfn].order))
        return multiple(*got)

    def do_pcp_churn(self, count: int, cpu: int) -> None:
        """Allocate count order-0 pages on one CPU, then free them all there: the pcp list
        climbs to its high mark and must drain a batch (BUDDY-R15)."""
        self.trace.rule("pcp_churn", count=count, cpu=cpu)
        pages = []
        for _ in range(count):
            pfn = self.step("alloc_pages", gfp_mask=GFP_HIGHUSER_MOVABLE, order=0, cpu=cpu)
            if pfn is None or pfn not in self.ledger.held:
                break
            pages.append(pfn)
        for pfn in pages:
            self.step("free_pages", pfn=pfn, order=0, cpu=cpu)

    def do_free_everything(self) -> None:
        """Drop every reference the machine holds and drain every CPU: BUDDY-I10's moment."""
        self.trace.rule("free_everything")
        for head in sorted(self.ledger.held):
            while head in self.ledger.held:
                held = self.ledger.held[head]
                before = held.refs
                self.step("free_pages", pfn=head, order=held.order, cpu=0)
                if head in self.ledger.held and self.ledger.held[head].refs == before:
                    break  # refused; the rules have already judged it
        if Capability.PCP in self.caps:
            for cpu in range(self.spec.config.nr_cpus):
                self.step("drain_pages", cpu=cpu)

    def _still_held(self, block: Block) -> Any:
        if block.pfn in self.ledger.held and self.ledger.held[block.pfn].order == block.order:
            return block
        self.freed.append(block)
        return multiple()


def _show(value: Any) -> str:
    return hex(value) if isinstance(value, int) and value > 0 else repr(value)


def view_difference(expected: BuddyView, actual: BuddyView) -> str:
    """The first difference between two views, in words ("" when equal)."""
    if expected == actual:
        return ""
    if expected.alloc_warnings != actual.alloc_warnings:
        return f"alloc_warnings {actual.alloc_warnings}, refmodel {expected.alloc_warnings}"
    for ref, imp in zip(expected.zones, actual.zones, strict=False):
        for field in attrs.fields(type(ref)):
            want, got = getattr(ref, field.name), getattr(imp, field.name)
            if want != got:
                return f"{ref.name}.{field.name}: {_clip(got)}, refmodel {_clip(want)}"
    return f"zone count {len(actual.zones)}, refmodel {len(expected.zones)}"


def page_state_difference(expected: BuddySnapshot, actual: BuddySnapshot) -> str:
    """The first pfn whose struct page differs ("" when equal)."""
    for field in attrs.fields(PageState):
        want = expected.array(field.name)
        got = actual.array(field.name)
        if want.shape != got.shape:
            return f"{field.name} has {got.shape[0]} entries, refmodel {want.shape[0]}"
        differs = np.flatnonzero(want != got)
        if differs.size:
            i = int(differs[0])
            return (f"{field.name}[{i:#x}] is {int(got[i])}, refmodel {int(want[i])} "
                    f"({differs.size} entries differ)")
    return ""


def _clip(value: object, width: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def make_buddy_machine(spec: MachineSpec) -> type[BuddyMachineBase]:
    """A machine class for one implementation, mode and machine."""
    config = spec.config
    cpus = st.integers(0, config.nr_cpus - 1)
    blocks = BuddyMachineBase.blocks

    def has(cap: Capability) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return when_capable(spec, cap)

    class BuddyMachine(BuddyMachineBase):
        @rule(target=blocks, gfp_mask=strategies.gfp_masks(), order=strategies.alloc_orders(),
              cpu=cpus)
        def alloc(self, gfp_mask: int, order: int, cpu: int) -> Any:
            return self.do_alloc(gfp_mask, order, cpu)

        @rule(target=blocks, block=consumes(blocks), cpu=cpus)
        def free(self, block: Block, cpu: int) -> Any:
            return self.do_free(block, cpu)

        @precondition(lambda self: bool(self.freed))
        @rule(index=st.integers(0, 1 << 16))
        def free_again(self, index: int) -> None:
            self.do_free_again(index)

        @rule(block=blocks, delta=st.sampled_from([-1, 1]))
        def free_wrong_order(self, block: Block, delta: int) -> None:
            self.do_free_wrong_order(block, delta)

        @has(Capability.REFCOUNT)
        @rule(block=blocks, offset=st.integers(0, MAX_ORDER * 100))
        def get(self, block: Block, offset: int) -> None:
            self.do_get(block, offset)

        @has(Capability.REFCOUNT)
        @rule(target=blocks, block=consumes(blocks), offset=st.integers(0, MAX_ORDER * 100),
              cpu=cpus)
        def put(self, block: Block, offset: int, cpu: int) -> Any:
            return self.do_put(block, offset, cpu)

        @has(Capability.SPLIT)
        @rule(target=blocks, block=consumes(blocks))
        def split(self, block: Block) -> Any:
            return self.do_split(block)

        @has(Capability.PCP)
        @rule(cpu=cpus)
        def drain(self, cpu: int) -> None:
            self.do_drain(cpu)

        @rule(target=blocks, gfp_mask=strategies.any_gfp_masks(), order=strategies.any_orders(),
              cpu=st.integers(-1, config.nr_cpus))
        def bad_alloc(self, gfp_mask: int, order: int, cpu: int) -> Any:
            return self.do_bad_alloc(gfp_mask, order, cpu)

        @rule(op=st.sampled_from(["free_pages", "get_page", "put_page", "split_page",
                                  "drain_pages"]),
              pfn=st.integers(-2, config.nr_pages + 1), order=strategies.any_orders(),
              cpu=st.integers(-1, config.nr_cpus))
        def bad_call(self, op: str, pfn: int, order: int, cpu: int) -> None:
            self.do_bad_call(op, pfn, order, cpu)

        @rule(target=blocks, gfp_mask=strategies.gfp_masks(), order=st.integers(0, MAX_ORDER - 1),
              cpu=cpus)
        def exhaust(self, gfp_mask: int, order: int, cpu: int) -> Any:
            return self.do_exhaust(gfp_mask, order, cpu)

        @has(Capability.PCP)
        @rule(count=st.integers(1, 32), cpu=cpus)
        def pcp_churn(self, count: int, cpu: int) -> None:
            self.do_pcp_churn(count, cpu)

        @rule()
        def free_everything(self) -> None:
            self.do_free_everything()

    BuddyMachine.spec = spec
    BuddyMachine.__name__ = BuddyMachine.__qualname__ = (
        f"Buddy{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return BuddyMachine


__all__ = ["Block", "BuddyMachineBase", "MachineSpec", "PageInfo", "make_buddy_machine"]
