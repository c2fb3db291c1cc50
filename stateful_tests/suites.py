"""The subsystems the suite knows, and where each one's pieces live.

Everything is named by ``module:attribute`` and imported on first use, so a subsystem whose
machine is not written yet (or whose module fails to import) is reported as unavailable
instead of breaking every other subsystem.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from typing import Any

import attrs

from stateful_tests.common import ConformanceMachine, MachineSpec


def load(path: str) -> Any:
    """``package.module:attr`` -> the object."""
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@attrs.frozen
class Suite:
    """One subsystem: its state machine, its capability enum, and the two bundled models."""

    name: str
    machine: str
    capabilities: str
    reference: str
    #: the fastmodel class; a subsystem whose fastmodel does not import yet is bundled with
    #: refmodel alone
    fast: str
    description: str = ""
    #: ``module:function(spec) -> tuple``: what the factory takes after the config when it
    #: is booted outside its machine (to read its capabilities): the page allocator for page
    #: tables and slabs, an empty translation source for a TLB.
    boot_args: str = ""
    #: the Capability member that means "my choices are 4.6's": ``vmconform check``'s auto
    #: mode runs lockstep for an implementation declaring it, contract mode otherwise
    exact_capability: str = "EXACT_PLACEMENT"

    def make_machine(self, spec: MachineSpec) -> type[ConformanceMachine]:
        """The machine class for one implementation, mode and configuration."""
        make: Callable[[MachineSpec], type[ConformanceMachine]] = load(self.machine)
        return make(spec)

    def capability_type(self) -> type[enum.Enum]:
        """The subsystem's Capability enum."""
        found: type[enum.Enum] = load(self.capabilities)
        return found

    def extra_args(self, spec: MachineSpec) -> tuple[Any, ...]:
        """The factory's arguments after the config, for a boot outside the machine."""
        if not self.boot_args:
            return ()
        make: Callable[[MachineSpec], tuple[Any, ...]] = load(self.boot_args)
        return make(spec)

    def available(self) -> bool:
        """True when the machine, the contract and the reference model import."""
        return _imports(self.machine, self.capabilities, self.reference)

    def fast_available(self) -> bool:
        """True when the bundled fastmodel imports too."""
        return _imports(self.fast)


def _imports(*paths: str) -> bool:
    try:
        for path in paths:
            load(path)
    except (ImportError, AttributeError):
        return False
    return True


SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    Suite("buddy", "stateful_tests.buddy_machine:make_buddy_machine",
          "specs.buddy:Capability", "refmodel.buddy:RefBuddy", "fastmodel.buddy:FastBuddy",
          description="physical pages: zones, free areas, pcp lists, struct page"),
    Suite("pagetable", "stateful_tests.pagetable_machine:make_pagetable_machine",
          "specs.pagetable:Capability", "refmodel.pagetable:RefPageTables",
          "fastmodel.pagetable:FastPageTables",
          boot_args="stateful_tests.suites:page_allocator_args",
          description="x86-64 4-level page tables and their entries"),
    Suite("tlb", "stateful_tests.tlb_machine:make_tlb_machine", "specs.tlb:Capability",
          "refmodel.tlb:RefTlb", "fastmodel.tlb:FastTlb",
          description="per-CPU TLBs, context switches and flushes",
          boot_args="stateful_tests.suites:empty_tables_args", exact_capability="EXACT_FLUSH"),
    Suite("vma", "stateful_tests.vma_machine:make_vma_machine", "specs.vma:Capability",
          "refmodel.vma:RefAddressSpace", "fastmodel.vma:FastAddressSpace",
          description="the address space: VMAs, mmap, munmap, mprotect, mremap, brk"),
    Suite("slub", "stateful_tests.slub_machine:make_slub_machine", "specs.slub:Capability",
          "refmodel.slub:RefSlub", "fastmodel.slub:FastSlub",
          boot_args="stateful_tests.suites:page_allocator_args",
          description="SLUB caches and kmalloc"),
    Suite("fault", "stateful_tests.fault_machine:make_fault_machine", "specs.kernel:Capability",
          "refmodel.kernel:RefKernel", "fastmodel.kernel:FastKernel",
          description="page faults, fork, COW and exit on the composed kernel",
          exact_capability="EXACT"),
    Suite("oom", "stateful_tests.oom_machine:make_oom_machine", "specs.kernel:Capability",
          "refmodel.kernel:RefKernel", "fastmodel.kernel:FastKernel",
          description="the OOM killer and its reaper on the composed kernel",
          exact_capability="EXACT"),
)}


def available_suites() -> dict[str, Suite]:
    """The suites whose pieces all import, in declaration order."""
    return {name: suite for name, suite in SUITES.items() if suite.available()}


def dependency(spec: MachineSpec, subsystem: str) -> Any:
    """A fresh instance of the subsystem another one is built on (page tables and slabs take
    their pages from a page allocator): the implementation's own when it has one, refmodel's
    otherwise.  The dependency is not under test here; its own suite checks it."""
    factory = spec.factories.get(subsystem) or load(SUITES[subsystem].reference)
    return factory(spec.config)


def page_allocator_args(spec: MachineSpec) -> tuple[Any, ...]:
    """Page tables and slabs are built on a page allocator."""
    return (dependency(spec, "buddy"),)


def empty_tables_args(spec: MachineSpec) -> tuple[Any, ...]:
    """A TLB is built on a translation source; for a boot, one with nothing mapped."""
    return (load("specs.tlb:NoTables")(),)
