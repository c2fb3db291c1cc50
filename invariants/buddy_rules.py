"""Operation rules of the buddy allocator, BUDDY-R1 .. BUDDY-R14 (``specs/buddy.md``).

A rule judges one step: the arguments, the result, the views before and after, and the
caller's ledger before the step.  The expected result of every refused call follows from the
ledger and the machine configuration alone, which is what lets contract mode judge an
implementation whose placement differs from 4.6's.
"""

from __future__ import annotations

import bisect

import attrs

from invariants.ledger import Ledger
from invariants.registry import step_rule
from invariants.snapshot import BuddyStep
from specs import gfp
from specs.buddy import BuddyView, Capability, PG_head
from specs.errno import Errno, describe
from specs.gfp import GfpFlag
from specs.machine import MAX_ORDER, MachineConfig

EINVAL = -Errno.EINVAL
EFAULT = -Errno.EFAULT

# ---------------------------------------------------------------------------------------------
# What the contract expects, from the ledger and the configuration alone
# ---------------------------------------------------------------------------------------------


def bad_cpu(config: MachineConfig, cpu: int) -> bool:
    """BUDDY-R6."""
    return not 0 <= cpu < config.nr_cpus


def bad_free_args(config: MachineConfig, pfn: int, order: int) -> bool:
    """BUDDY-R7: order out of range, pfn outside memory, or pfn misaligned for the order."""
    return (not 0 <= order < MAX_ORDER or not 0 <= pfn < config.nr_pages
            or bool(pfn & ((1 << order) - 1)))


def gfp_nonsense(gfp_mask: int) -> bool:
    """BUDDY-R4."""
    mask = gfp_mask & gfp.__GFP_BITS_MASK
    return gfp.gfp_zone_bad(mask) or gfp.gfp_migratetype_bad(mask)


def expected_free(config: MachineConfig, ledger: Ledger, pfn: int, order: int, cpu: int) -> int:
    """free_pages' result: BUDDY-R6, R7, R8, R9, else 0."""
    if bad_cpu(config, cpu) or bad_free_args(config, pfn, order):
        return EINVAL
    held = ledger.held.get(pfn)
    if held is None or held.refs == 0:
        return EFAULT
    if held.refs == 1 and held.order != order:
        return EINVAL
    return 0


def compound_owner(ledger: Ledger, pfn: int) -> int | None:
    """The head get_page/put_page act on: pfn itself if held, or its compound head."""
    if pfn in ledger.held:
        return pfn
    owner = ledger.owner(pfn)
    if owner is not None and ledger.held[owner].compound:
        return owner
    return None


def expected_get(config: MachineConfig, ledger: Ledger, pfn: int) -> int:
    """get_page's result: BUDDY-R11."""
    if not 0 <= pfn < config.nr_pages:
        return EINVAL
    return 0 if compound_owner(ledger, pfn) is not None else EFAULT


def expected_put(config: MachineConfig, ledger: Ledger, pfn: int, cpu: int) -> int:
    """put_page's result: BUDDY-R6, R12."""
    if bad_cpu(config, cpu) or not 0 <= pfn < config.nr_pages:
        return EINVAL
    head = compound_owner(ledger, pfn)
    if head is None:
        return EFAULT
    held = ledger.held[head]
    if held.refs == 1 and not held.compound and held.order:
        return EINVAL
    return 0


def expected_split(config: MachineConfig, ledger: Ledger, pfn: int, order: int) -> int:
    """split_page's result: BUDDY-R13."""
    if not 0 <= pfn < config.nr_pages or not 0 <= order < MAX_ORDER:
        return EINVAL
    owner = ledger.owner(pfn)
    if owner is not None and ledger.held[owner].compound and ledger.held[owner].order:
        return EINVAL
    held = ledger.held.get(pfn)
    if held is None:
        return EFAULT
    if held.order != order:
        return EINVAL
    return 0


# ---------------------------------------------------------------------------------------------
# Helpers over views
# ---------------------------------------------------------------------------------------------


def handed_out_nothing(before: BuddyView, after: BuddyView) -> bool:
    """Free lists, counters and pcp lists are as they were (fair batches may differ)."""
    return all(
        (b.free_lists, b.nr_free, b.nr_free_pages, b.pcp)
        == (a.free_lists, a.nr_free, a.nr_free_pages, a.pcp)
        for b, a in zip(before.zones, after.zones, strict=True))


def unchanged(before: BuddyView, after: BuddyView) -> bool:
    """The whole view is as it was, apart from the warning count."""
    return attrs.evolve(before, alloc_warnings=0) == attrs.evolve(after, alloc_warnings=0)


def covered(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """[start, end) lies inside the union of sorted spans.  Complexity: O(log n + k)."""
    i = max(bisect.bisect_right(spans, (start, 1 << 62)) - 1, 0)
    reach = start
    for lo, hi in spans[i:]:
        if lo > reach:
            return False
        reach = max(reach, hi)
        if reach >= end:
            return True
    return reach >= end


def total_free(view: BuddyView) -> int:
    """Buddy plus pcp pages."""
    return sum(z.nr_free_pages + sum(p.count for p in z.pcp) for z in view.zones)


def refused(step: BuddyStep, expected: int, rule: str) -> list[str]:
    """A refusal must carry the expected errno and leave the state unchanged."""
    problems = []
    if step.result != expected:
        problems.append(f"{step.op}{_args(step)} returned {_res(step.result)}, "
                        f"{rule} requires {describe(expected)}")
    elif not unchanged(step.before, step.after):
        problems.append(f"{step.op}{_args(step)} was refused with {describe(expected)} but "
                        f"changed the allocator state")
    return problems


def _args(step: BuddyStep) -> str:
    return "(" + ", ".join(f"{k}={v:#x}" if k in ("pfn", "gfp_mask") else f"{k}={v}"
                           for k, v in step.args.items()) + ")"


def _res(result: int | None) -> str:
    return "None" if result is None else describe(result)


def _classzone(view: BuddyView, gfp_mask: int) -> int | None:
    high = gfp.gfp_zone(gfp_mask)
    populated = [z.index for z in view.zones if z.managed_pages and z.index <= high]
    return max(populated) if populated else None


# ---------------------------------------------------------------------------------------------
# alloc_pages
# ---------------------------------------------------------------------------------------------


def _alloc_valid(step: BuddyStep) -> bool:
    args = step.args
    return (not bad_cpu(step.config, args["cpu"]) and not gfp_nonsense(args["gfp_mask"])
            and 0 <= args["order"] < MAX_ORDER)


@step_rule("BUDDY-R1", "allocation placement", ops=["alloc_pages"])
def allocation_placement(step: BuddyStep) -> list[str]:
    """A returned block is aligned, inside one allowed zone, and was entirely free."""
    if step.result is None or not _alloc_valid(step):
        return []
    pfn, order, mask = step.result, step.args["order"], step.args["gfp_mask"]
    size = 1 << order
    problems = []
    if pfn % size:
        problems.append(f"alloc_pages(order={order}) returned misaligned pfn {pfn:#x}")
    zones = [z for z in step.before.zones if z.start_pfn <= pfn and pfn + size <= z.end_pfn]
    high = gfp.gfp_zone(mask & gfp.__GFP_BITS_MASK)
    if not zones:
        problems.append(f"block {pfn:#x}-{pfn + size:#x} is not inside one zone")
    elif zones[0].index > high:
        problems.append(f"block {pfn:#x} is in {zones[0].name}, but {gfp.gfp_name(mask)} "
                        f"allows zones up to {gfp.ZONE_NAMES[high]}")
    if not covered(step.before.free_spans, pfn, pfn + size):
        problems.append(f"block {pfn:#x}-{pfn + size:#x} was not free before the call "
                        f"(handed out twice?)")
    return problems


#: BUDDY-R2 looks at this many tail pages of a new block; BUDDY-I9 and BUDDY-I12 see every
#: page on the next sweep, so sampling here only delays, never hides, a bad tail.
R2_TAIL_SAMPLES = 16


def sampled_tails(pfn: int, order: int) -> list[int]:
    """Every tail of a small block; evenly spaced ones (and the last) of a large one."""
    size = 1 << order
    if size - 1 <= R2_TAIL_SAMPLES:
        return list(range(pfn + 1, pfn + size))
    stride = size // R2_TAIL_SAMPLES
    return [*range(pfn + stride, pfn + size, stride), pfn + size - 1]


@step_rule("BUDDY-R2", "allocated block state", ops=["alloc_pages"],
           needs=[Capability.PAGE_STATE])
def allocated_block_state(step: BuddyStep) -> list[str]:
    """The head holds the one reference; compound set-up iff __GFP_COMP and order > 0."""
    if step.result is None or not _alloc_valid(step):
        return []
    pfn, order, mask = step.result, step.args["order"], step.args["gfp_mask"]
    head = step.impl.page(pfn)
    if head is None:
        return [f"page({pfn:#x}) is None for a pfn alloc_pages returned"]
    problems = []
    if head.refcount != 1:
        problems.append(f"new block {pfn:#x}: head refcount {head.refcount}, expected 1")
    compound = bool(mask & GfpFlag.COMP) and order > 0
    check_compound = Capability.COMPOUND in step.impl.capabilities
    if check_compound and bool(head.flags & (1 << PG_head)) != compound:
        problems.append(f"new block {pfn:#x}: PG_head is {bool(head.flags & (1 << PG_head))}, "
                        f"expected {compound}")
    for tail in sampled_tails(pfn, order):
        page = step.impl.page(tail)
        if page is None or page.refcount != 0:
            problems.append(f"new block {pfn:#x}: tail {tail:#x} has refcount "
                            f"{None if page is None else page.refcount}, expected 0")
            break
        if check_compound and page.compound_head != (pfn if compound else -1):
            problems.append(f"new block {pfn:#x}: tail {tail:#x} compound_head "
                            f"{page.compound_head}, expected {pfn if compound else -1}")
            break
    return problems


@step_rule("BUDDY-R3", "order out of range", ops=["alloc_pages"])
def order_out_of_range(step: BuddyStep) -> list[str]:
    """4.6 returns NULL (with one WARN unless __GFP_NOWARN) for order >= MAX_ORDER."""
    args = step.args
    if bad_cpu(step.config, args["cpu"]) or gfp_nonsense(args["gfp_mask"]):
        return []
    if 0 <= args["order"] < MAX_ORDER:
        return []
    problems = []
    if step.result is not None:
        problems.append(f"alloc_pages{_args(step)} returned {step.result:#x}, expected None")
    if not handed_out_nothing(step.before, step.after):
        problems.append(f"alloc_pages{_args(step)} changed the free or pcp lists")
    warned = step.after.alloc_warnings - step.before.alloc_warnings
    no_zone = _classzone(step.before, args["gfp_mask"] & gfp.__GFP_BITS_MASK) is None
    expected = 0 if no_zone or args["gfp_mask"] & GfpFlag.NOWARN else 1  # no zone: no report
    if warned != expected:
        problems.append(f"alloc_pages{_args(step)} reported {warned} warnings, expected "
                        f"{expected}")
    return problems


@step_rule("BUDDY-R4", "nonsense gfp masks", ops=["alloc_pages"])
def nonsense_gfp(step: BuddyStep) -> list[str]:
    """Forbidden zone combinations and MOVABLE|RECLAIMABLE get NULL and change nothing."""
    if bad_cpu(step.config, step.args["cpu"]) or not gfp_nonsense(step.args["gfp_mask"]):
        return []
    problems = []
    if step.result is not None:
        problems.append(f"alloc_pages{_args(step)} returned {step.result:#x}, expected None")
    if not unchanged(step.before, step.after):
        problems.append(f"alloc_pages{_args(step)} changed the allocator state")
    return problems


@step_rule("BUDDY-R5", "watermark respect", ops=["alloc_pages"],
           needs=[Capability.WATERMARKS])
def watermark_respect(step: BuddyStep) -> list[str]:
    """Only __GFP_MEMALLOC and __GFP_NOFAIL requests may take a zone below its reduced MIN."""
    if step.result is None or not _alloc_valid(step):
        return []
    mask = step.args["gfp_mask"] & gfp.__GFP_BITS_MASK
    order = step.args["order"]
    if mask & GfpFlag.NOFAIL or (mask & GfpFlag.MEMALLOC and not mask & GfpFlag.NOMEMALLOC):
        return []
    both = GfpFlag.ATOMIC | GfpFlag.DIRECT_RECLAIM
    if mask & both == both:
        mask &= ~GfpFlag.ATOMIC  # the slow path strips it
    alloc_flags = gfp.gfp_to_alloc_flags(mask)
    zone = next((z for z in step.before.zones
                 if z.start_pfn <= step.result < z.end_pfn), None)
    classzone = _classzone(step.before, mask)
    if zone is None or classzone is None:
        return []  # BUDDY-R1 reports misplaced blocks
    free = zone.nr_free_pages - ((1 << order) - 1)
    floor = zone.watermark[gfp.WMARK_MIN]
    if alloc_flags & gfp.ALLOC_HIGH:
        floor -= floor // 2
    if alloc_flags & gfp.ALLOC_HARDER:
        floor -= floor // 4
    else:
        free -= zone.nr_reserved_highatomic
    floor += zone.lowmem_reserve[classzone]
    if free <= floor:
        return [f"{gfp.gfp_name(mask)} order-{order} allocation took {step.result:#x} from "
                f"{zone.name} with {zone.nr_free_pages} free pages; the floor for this request "
                f"is {floor} (MIN {zone.watermark[0]}, lowmem_reserve[{classzone}] "
                f"{zone.lowmem_reserve[classzone]}) and free - (2^order - 1) = {free} <= floor"]
    return []


@step_rule("BUDDY-R6", "no such CPU",
           ops=["alloc_pages", "free_pages", "put_page", "drain_pages"])
def no_such_cpu(step: BuddyStep) -> list[str]:
    """A CPU number outside the machine is refused before anything changes."""
    if not bad_cpu(step.config, step.args["cpu"]):
        return []
    if step.op == "alloc_pages":
        if step.result is not None:
            return [f"alloc_pages{_args(step)} returned {step.result:#x} for a CPU that does "
                    f"not exist"]
        return [] if unchanged(step.before, step.after) else [
            f"alloc_pages{_args(step)} changed state for a CPU that does not exist"]
    return refused(step, EINVAL, "BUDDY-R6")


# ---------------------------------------------------------------------------------------------
# free_pages
# ---------------------------------------------------------------------------------------------


@step_rule("BUDDY-R7", "bad free arguments", ops=["free_pages"])
def bad_free_arguments(step: BuddyStep) -> list[str]:
    """Order out of range, pfn outside memory or misaligned: -EINVAL, nothing changes."""
    args = step.args
    if bad_cpu(step.config, args["cpu"]) or not bad_free_args(step.config, args["pfn"],
                                                               args["order"]):
        return []
    return refused(step, EINVAL, "BUDDY-R7")


@step_rule("BUDDY-R8", "second free refused", ops=["free_pages"])
def second_free(step: BuddyStep) -> list[str]:
    """Freeing a page that holds no reference (already free, pcp, tail) is refused."""
    args = step.args
    expected = expected_free(step.config, step.ledger, args["pfn"], args["order"], args["cpu"])
    if expected != EFAULT:
        return []
    return refused(step, EFAULT, "BUDDY-R8")


@step_rule("BUDDY-R9", "wrong-order free refused", ops=["free_pages"])
def wrong_order_free(step: BuddyStep) -> list[str]:
    """The last reference must be dropped with the order the block was allocated at."""
    args = step.args
    if bad_cpu(step.config, args["cpu"]) or bad_free_args(step.config, args["pfn"],
                                                          args["order"]):
        return []
    if expected_free(step.config, step.ledger, args["pfn"], args["order"], args["cpu"]) != EINVAL:
        return []
    return refused(step, EINVAL, "BUDDY-R9")


def block_returned(step: BuddyStep, head: int, order: int) -> list[str]:
    """After the last reference went, the block is on free or pcp lists, all of it."""
    problems = []
    size = 1 << order
    if not covered(step.after.free_spans, head, head + size):
        problems.append(f"{step.op}{_args(step)}: block {head:#x}-{head + size:#x} is not "
                        f"entirely on free or pcp lists afterwards")
    grown = total_free(step.after) - total_free(step.before)
    if grown != size:
        problems.append(f"{step.op}{_args(step)}: free + pcp pages grew by {grown}, "
                        f"expected {size}")
    return problems


@step_rule("BUDDY-R10", "free returns the block", ops=["free_pages"])
def free_returns_block(step: BuddyStep) -> list[str]:
    """A valid free succeeds; dropping the last reference returns exactly the block."""
    args = step.args
    if expected_free(step.config, step.ledger, args["pfn"], args["order"], args["cpu"]) != 0:
        return []
    if step.result != 0:
        return [f"free_pages{_args(step)} of a held block returned {_res(step.result)}, "
                f"expected 0"]
    if step.ledger.held[args["pfn"]].refs > 1:
        return [] if handed_out_nothing(step.before, step.after) else [
            f"free_pages{_args(step)} dropped a reference but changed the free lists"]
    return block_returned(step, args["pfn"], args["order"])


# ---------------------------------------------------------------------------------------------
# get_page, put_page, split_page, drain_pages
# ---------------------------------------------------------------------------------------------


@step_rule("BUDDY-R11", "get_page", ops=["get_page"], needs=[Capability.REFCOUNT])
def get_page_rule(step: BuddyStep) -> list[str]:
    """A reference can only be taken on a page that already has one (or its compound head)."""
    pfn = step.args["pfn"]
    expected = expected_get(step.config, step.ledger, pfn)
    if expected:
        return refused(step, expected, "BUDDY-R11")
    if step.result != 0:
        return [f"get_page{_args(step)} returned {_res(step.result)}, expected 0"]
    head = compound_owner(step.ledger, pfn)
    assert head is not None
    problems = [] if unchanged(step.before, step.after) else [
        f"get_page{_args(step)} changed the free lists"]
    if Capability.PAGE_STATE in step.impl.capabilities:
        page = step.impl.page(head)
        want = step.ledger.held[head].refs + 1
        if page is None or page.refcount != want:
            problems.append(f"get_page{_args(step)}: head {head:#x} refcount "
                            f"{None if page is None else page.refcount}, expected {want}")
    return problems


@step_rule("BUDDY-R12", "put_page", ops=["put_page"], needs=[Capability.REFCOUNT])
def put_page_rule(step: BuddyStep) -> list[str]:
    """Dropping the last reference frees the whole block (compound) or the one page."""
    pfn, cpu = step.args["pfn"], step.args["cpu"]
    if bad_cpu(step.config, cpu):
        return []  # BUDDY-R6
    expected = expected_put(step.config, step.ledger, pfn, cpu)
    if expected:
        return refused(step, expected, "BUDDY-R12")
    if step.result != 0:
        return [f"put_page{_args(step)} returned {_res(step.result)}, expected 0"]
    head = compound_owner(step.ledger, pfn)
    assert head is not None
    held = step.ledger.held[head]
    if held.refs > 1:
        return [] if handed_out_nothing(step.before, step.after) else [
            f"put_page{_args(step)} dropped a reference but changed the free lists"]
    return block_returned(step, head, held.order)


@step_rule("BUDDY-R13", "split_page", ops=["split_page"], needs=[Capability.SPLIT])
def split_page_rule(step: BuddyStep) -> list[str]:
    """After a split every page of the block carries its own reference."""
    pfn, order = step.args["pfn"], step.args["order"]
    expected = expected_split(step.config, step.ledger, pfn, order)
    if expected:
        return refused(step, expected, "BUDDY-R13")
    if step.result != 0:
        return [f"split_page{_args(step)} returned {_res(step.result)}, expected 0"]
    problems = [] if unchanged(step.before, step.after) else [
        f"split_page{_args(step)} changed the free lists"]
    if Capability.PAGE_STATE in step.impl.capabilities:
        for sub in range(pfn, pfn + (1 << order)):
            page = step.impl.page(sub)
            if page is None or page.refcount < 1:
                problems.append(f"split_page{_args(step)}: page {sub:#x} has refcount "
                                f"{None if page is None else page.refcount} afterwards")
                break
    return problems


@step_rule("BUDDY-R14", "drain_pages", ops=["drain_pages"], needs=[Capability.PCP])
def drain_pages_rule(step: BuddyStep) -> list[str]:
    """A drained CPU has empty pcp lists everywhere, and the pages are back in the buddy."""
    cpu = step.args["cpu"]
    if bad_cpu(step.config, cpu):
        return []  # BUDDY-R6
    if step.result != 0:
        return [f"drain_pages{_args(step)} returned {_res(step.result)}, expected 0"]
    problems = []
    held_before = 0
    for before, after in zip(step.before.zones, step.after.zones, strict=True):
        if cpu < len(before.pcp):
            held_before += before.pcp[cpu].count
        if cpu < len(after.pcp) and (after.pcp[cpu].count or any(after.pcp[cpu].lists)):
            problems.append(f"drain_pages({cpu}): {after.name} still has "
                            f"{after.pcp[cpu].count} pages on cpu{cpu}'s lists")
    grown = (sum(z.nr_free_pages for z in step.after.zones)
             - sum(z.nr_free_pages for z in step.before.zones))
    if grown != held_before:
        problems.append(f"drain_pages({cpu}): NR_FREE_PAGES grew by {grown}, the lists held "
                        f"{held_before}")
    return problems


@step_rule("BUDDY-R15", "a free drains at the high mark", ops=["free_pages", "put_page"],
           needs=[Capability.PCP])
def free_drains_at_high(step: BuddyStep) -> list[str]:
    """An order-0 page freed onto a pcp list whose count was below high leaves it below high:
    free_hot_cold_page drains a batch the moment count reaches high."""
    if step.result != 0 or bad_cpu(step.config, step.args["cpu"]):
        return []
    problems = []
    cpu = step.args["cpu"]
    for before, after in zip(step.before.zones, step.after.zones, strict=True):
        if cpu >= len(before.pcp) or cpu >= len(after.pcp):
            continue
        was, now = before.pcp[cpu], after.pcp[cpu]
        if now.count > was.count and was.count < max(was.high, 1) <= now.count:
            problems.append(f"{step.op}{_args(step)}: {after.name} cpu{cpu} pcp count went "
                            f"from {was.count} to {now.count}, reaching high {now.high} "
                            f"without draining a batch")
    return problems
