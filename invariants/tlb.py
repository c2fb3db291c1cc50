"""State invariants of the TLB model, TLB-I1 .. TLB-I4 (``specs/tlb.md``).

Each checker reads a :class:`TlbSnapshot`: the implementation's view and a frozen copy of the
tables it translates through.  The machine runs them after every rule, and every rule that
changes a table entry flushes before it returns, so these are the points where 4.6
guarantees coherence; nothing is checked between a PTE change and its flush.
"""

from __future__ import annotations

from typing import Any

import attrs

from invariants.registry import state_invariant
from specs.machine import MachineConfig
from specs.pte import _PAGE_ACCESSED, _PAGE_PRESENT, PAGE_SHIFT, PHYSICAL_MASK
from specs.tlb import (
    INIT_MM,
    TLB_ENTRY_FLAGS,
    Capability,
    CpuTlbView,
    TableView,
    TlbEntry,
    TlbView,
    flag_names,
    grants_more,
    is_canonical,
)

MAX_PROBLEMS = 8  # report this many instances of one problem, then a count
MAX_PFN = PHYSICAL_MASK >> PAGE_SHIFT


@attrs.frozen
class TlbSnapshot:
    """The state after a step: the TLB view and the tables it translates through."""

    impl: Any
    view: TlbView
    tables: TableView

    @property
    def config(self) -> MachineConfig:
        """The machine the implementation booted."""
        config: MachineConfig = self.impl.config
        return config

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the implementation declares."""
        caps: frozenset[Capability] = self.impl.capabilities
        return caps


@attrs.frozen
class TlbStep:
    """One operation as a step rule judges it."""

    op: str
    args: dict[str, int]
    result: Any
    before: TlbView
    after: TlbView
    tables_before: TableView
    tables_after: TableView
    impl: Any

    @property
    def config(self) -> MachineConfig:
        """The machine the implementation booted."""
        config: MachineConfig = self.impl.config
        return config


def capped(problems: list[str]) -> list[str]:
    """The first MAX_PROBLEMS problems and a count of the rest."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


def describe_entry(entry: TlbEntry) -> str:
    """``0x400000 -> pfn 0x12 [P|RW|U|A|D] from mm 1``."""
    return (f"{entry.vpage << PAGE_SHIFT:#x} -> pfn {entry.pfn:#x} [{flag_names(entry.flags)}] "
            f"from mm {entry.mm}")


def describe_cpu(cpu: CpuTlbView) -> str:
    """``cpu1 (lazy, active mm 2, CR3 mm 0)``."""
    state = "lazy" if cpu.lazy else "running"
    return f"cpu{cpu.cpu} ({state}, active mm {cpu.active_mm}, CR3 mm {cpu.loaded_mm})"


@state_invariant("TLB-I1", "no cached translation grants more than the tables")
def coherence(snap: TlbSnapshot) -> list[str]:
    """Once a flush has returned no CPU may still use a translation the tables no longer
    give: another pfn, a permission taken away, or a page no longer mapped.  An entry that
    grants less is fine (upgrades need no flush), and ACCESSED may differ either way."""
    problems = []
    for cpu in snap.view.cpus:
        for entry in cpu.entries:
            pte = snap.tables.lookup(cpu.loaded_mm, entry.vpage << PAGE_SHIFT)
            why = grants_more(entry.flags, entry.pfn, pte)
            if why:
                problems.append(f"{describe_cpu(cpu)} caches {describe_entry(entry)}, but in "
                                f"mm {cpu.loaded_mm}'s tables {why} (pte {pte:#x})")
    return capped(problems)


@state_invariant("TLB-I2", "cached translations hold only hardware bits")
def hardware_bits_only(snap: TlbSnapshot) -> list[str]:
    """A TLB caches what the MMU interprets: software bits of the PTE (SPECIAL, SOFT_DIRTY,
    DEVMAP, ...) never appear; a cached entry is present and accessed (the walk set A), maps
    a pfn inside the physical mask, and names a canonical page."""
    problems = []
    for cpu in snap.view.cpus:
        for entry in cpu.entries:
            extra = entry.flags & ~TLB_ENTRY_FLAGS
            if extra:
                problems.append(f"{describe_cpu(cpu)} caches {describe_entry(entry)}: bits "
                                f"{extra:#x} are not hardware bits of a 4 KiB entry")
            missing = (_PAGE_PRESENT | _PAGE_ACCESSED) & ~entry.flags
            if missing:
                problems.append(f"{describe_cpu(cpu)} caches {describe_entry(entry)} without "
                                f"{flag_names(missing)}")
            if not 0 <= entry.pfn <= MAX_PFN:
                problems.append(f"{describe_cpu(cpu)} caches {describe_entry(entry)}: the pfn "
                                f"is outside the 46-bit physical mask")
            if not is_canonical(entry.vpage << PAGE_SHIFT):
                problems.append(f"{describe_cpu(cpu)} caches {describe_entry(entry)}: not a "
                                f"canonical page")
    return capped(problems)


@state_invariant("TLB-I3", "non-global entries come from the tables CR3 holds")
def cr3_discipline(snap: TlbSnapshot) -> list[str]:
    """Loading CR3 drops every non-global entry, so a CPU caches non-global translations
    only from the tables it has loaded now; an entry of another mm would translate this mm's
    addresses with someone else's pages (4.6 uses no PCIDs to tell them apart)."""
    problems = [f"{describe_cpu(cpu)} still caches {describe_entry(entry)}"
                for cpu in snap.view.cpus for entry in cpu.entries
                if not entry.is_global and entry.mm != cpu.loaded_mm]
    return capped(problems)


@state_invariant("TLB-I4", "mm_cpumask, lazy state and CR3 agree")
def cpumask_consistency(snap: TlbSnapshot) -> list[str]:
    """[4.6: switch_mm, leave_mm] a CPU is in mm_cpumask(mm) exactly while mm is its active
    mm and its tables are in CR3; a running (not lazy) CPU is always so; after leave_mm a
    lazy CPU holds swapper_pg_dir and is in no mask.  Flushes are sent by mask, so a CPU
    outside the mask with the mm loaded would never be told about a change."""
    view = snap.view
    problems = []
    members: dict[int, list[int]] = {}
    for mm, numbers in view.mm_cpumask:
        if mm <= INIT_MM:
            problems.append(f"mm_cpumask lists mm {mm}, which is not a user mm")
        for number in numbers:
            members.setdefault(number, []).append(mm)
            if not 0 <= number < view.nr_cpus:
                problems.append(f"mm_cpumask({mm}) holds cpu{number}, which does not exist")
    for cpu in view.cpus:
        masks = members.get(cpu.cpu, [])
        if cpu.loaded_mm not in (INIT_MM, cpu.active_mm):
            problems.append(f"{describe_cpu(cpu)}: CR3 holds neither the active mm nor "
                            f"swapper_pg_dir")
        if [m for m in masks if m != cpu.active_mm]:
            problems.append(f"{describe_cpu(cpu)} is in mm_cpumask of mm "
                            f"{', '.join(str(m) for m in masks if m != cpu.active_mm)}")
        in_active = cpu.active_mm in masks
        loaded_user = cpu.loaded_mm != INIT_MM and cpu.loaded_mm == cpu.active_mm
        if in_active != loaded_user:
            problems.append(f"{describe_cpu(cpu)} is {'in' if in_active else 'not in'} "
                            f"mm_cpumask({cpu.active_mm}) but CR3 holds mm {cpu.loaded_mm}")
        if not cpu.lazy and (cpu.active_mm == INIT_MM or not in_active):
            problems.append(f"{describe_cpu(cpu)} runs a user task but is not in its mm's "
                            f"mm_cpumask with its tables loaded")
    return capped(problems)
