"""The address-space state machine, in lockstep and contract modes.

:func:`make_vma_machine` builds a machine class for one implementation, mode and machine.
Every step goes through :meth:`VmaMachineBase.step`: the guarded plug-in call, the same call
on refmodel in lockstep (results and views compared), the operation rules, then the state
invariants.  Addresses are drawn from a small window around ``mmap_base`` so that fixed
mappings, hints and top-down placements collide, merge and split; the ``bad_*`` rules draw
from anything at all (unaligned, zero and huge lengths, unknown and conflicting flags,
offsets past the file, ranges beyond TASK_SIZE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from invariants.registry import LOCKSTEP, PLUGIN, CheckFailure
from invariants.vma import VmaState, VmaStep
from invariants.vma_render import diagram, maps
from refmodel.vma import RefAddressSpace
from specs.errno import describe
from specs.machine import PAGE_SIZE
from specs.vma import (
    DEFAULT_MAX_MAP_COUNT,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_32BIT,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    OVERCOMMIT_GUESS,
    OVERCOMMIT_NEVER,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_NONE,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    TASK_SIZE,
    VM_DONTCOPY,
    VM_GROWSDOWN,
    AddressSpace,
    Capability,
    MmView,
    VmaView,
    process_config,
)
from stateful_tests.common import ConformanceMachine, MachineSpec, identifier, when_capable
from stateful_tests.harness import (
    Guard,
    GuardedImpl,
    describe_call,
    is_int,
    want_instance,
    want_int,
)

#: Pages in the window the ordinary rules aim at (it ends 8 pages above mmap_base, so
#: top-down placements land in it too).  Small, so that mappings collide, merge and split.
WINDOW_PAGES = 40
MAX_PAGES = 6
MAX_FDS = 4

RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = dict.fromkeys(
    ("mmap", "munmap", "mprotect", "mremap", "brk", "touch", "open_file", "set_sysctl",
     "madvise"),
    want_int)
#: The advice the madvise rule draws: the contract's three, and two it refuses (-EINVAL).
ADVICE = st.sampled_from([MADV_DONTFORK, MADV_DONTFORK, MADV_DOFORK, MADV_DONTNEED, 8, -1])


def want_child(value: Any) -> str | None:
    """Result check for dup_mm: an errno, or an address space the machine can drive."""
    if is_int(value) or isinstance(value, AddressSpace):
        return None
    return ("the contract requires a new address space (specs.vma.AddressSpace) or -ENOMEM, "
            f"not {type(value).__name__}")


OPERATIONS = (*RESULT_CHECKS, "dup_mm")
VIEW_CHECKS: dict[str, Callable[[Any], str | None]] = {
    **RESULT_CHECKS, "view": want_instance(MmView), "dup_mm": want_child,
    "find_vma": lambda v: None if v is None or isinstance(v, VmaView) else
    f"the contract requires a VmaView or None, not {type(v).__name__}"}

PROTS = st.sampled_from([PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE,
                         PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC])
EXTRA_MAP_FLAGS = st.sampled_from([0, 0, 0, MAP_NORESERVE, MAP_GROWSDOWN, MAP_POPULATE,
                                   MAP_LOCKED, MAP_NORESERVE | MAP_POPULATE])
#: Values that make syscall arguments interesting: edges of pages and of the address space.
EDGY = st.one_of(
    st.integers(0, 1 << 20),
    st.sampled_from([0, 1, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, TASK_SIZE - PAGE_SIZE,
                     TASK_SIZE, TASK_SIZE + PAGE_SIZE, 1 << 47, (1 << 63), (1 << 64) - 1,
                     (1 << 64) - PAGE_SIZE, -1, -PAGE_SIZE]),
    st.integers(0, (1 << 64) - 1),
)
#: Mostly a valid mapping type with odd extra bits, sometimes anything at all.
ANY_FLAGS = st.one_of(
    st.builds(lambda base, extra: base | extra,
              st.sampled_from([MAP_PRIVATE | MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS,
                               MAP_PRIVATE, MAP_SHARED, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                               MAP_SHARED | MAP_FIXED, MAP_PRIVATE | MAP_FIXED]),
              st.sampled_from([0, 0, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_32BIT,
                               MAP_HUGETLB, MAP_SHARED | MAP_PRIVATE, 0x0800_0000,
                               0x10_0000, MAP_POPULATE])),
    st.integers(0, 0x7_FFFF), st.integers(0, (1 << 32) - 1),
                      st.sampled_from([MAP_SHARED | MAP_PRIVATE, 0, 0x0F, 0x03,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
                                       MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                                       MAP_PRIVATE | MAP_ANONYMOUS | 0x800_0000]))
#: What odd_mmap gets wrong, one at a time.
ODD_MMAP_DEFECTS = ("unaligned", "zero_length", "huge_length", "beyond_task_size",
                    "below_min_addr", "both_types", "no_type", "unknown_flag",
                    "growsdown_shared", "unaligned_offset", "offset_overflow", "bad_fd",
                    "file_past_end", "readonly_shared")
LENGTHS = st.one_of(st.sampled_from([0, 1, PAGE_SIZE - 1, PAGE_SIZE, 3 * PAGE_SIZE + 5,
                                     TASK_SIZE, TASK_SIZE + 1, (1 << 64) - 1,
                                     (1 << 64) - PAGE_SIZE, -1]), EDGY)
OFFSETS = st.one_of(st.integers(0, 20).map(lambda p: p * PAGE_SIZE),
                    st.sampled_from([1, (1 << 64) - PAGE_SIZE, -PAGE_SIZE, 1 << 63]), EDGY)
ANY_PROT = st.one_of(st.integers(0, 0xF), st.sampled_from(
    [0x10, PROT_GROWSDOWN | PROT_READ, PROT_GROWSUP | PROT_READ,
     PROT_GROWSDOWN | PROT_GROWSUP, PROT_SEM | PROT_READ, (1 << 64) - 1]))


class VmaMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_vma_machine` adds the rules."""

    spec: ClassVar[MachineSpec]

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.steps = 0
        caps = self.boot(Capability)
        self.caps: frozenset[Capability] = caps
        self.checked_impl = GuardedImpl(self.sut, VIEW_CHECKS)
        self.ref = RefAddressSpace(spec.config) if spec.mode == "lockstep" else None
        self.select_checks("vma", caps, OPERATIONS)
        pconf = process_config(spec.config)
        self.window = pconf.mmap_base - (WINDOW_PAGES - 8) * PAGE_SIZE
        self.fds: list[int] = []
        #: anon_vmas whose chains came from dup_mm (see VmaStep.inherited)
        self.inherited: frozenset[int] = frozenset()
        self.view = self._sut_view()
        self._compare("boot", {}, None, None)

    # -- the step ------------------------------------------------------------------------------

    def step(self, op: str, **args: Any) -> int:
        """One call on the implementation (and refmodel), judged by every enabled rule."""
        before = self.view
        result: int = self.sut.call(op, args, RESULT_CHECKS[op])
        expected = getattr(self.ref, op)(**args) if self.ref is not None else None
        self.view = self._sut_view()
        self._compare(op, args, result, expected)
        record = VmaStep(op=op, args=args, result=result, before=before, after=self.view,
                         impl=self.checked_impl, inherited=self.inherited)
        if self.inherited:  # an identity that is gone may be handed out again
            self.inherited &= anon_vmas(self.view)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                self._fail(check.id, f"{describe_call(op, args)} -> {_show(result)}: "
                                     f"{check.title}:\n  " + "\n  ".join(problems), args,
                           before)
        self.steps += 1
        return result

    def _sut_view(self, guard: Guard | None = None) -> MmView:
        view: MmView = (guard or self.sut).call("view", {}, want_instance(MmView))
        return view

    def fork_step(self, continue_in_child: bool) -> None:
        """dup_mm on the implementation (and refmodel), judged by VMA-R10 with both views; the
        child is guarded like the parent, and the run goes on in the one drawn."""
        before = self.view
        got = self.sut.call("dup_mm", {}, want_child)
        expected = self.ref.dup_mm() if self.ref is not None else None
        self.view = self._sut_view()
        kid: Guard | None = None
        kid_view: MmView | None = None
        if not is_int(got):
            kid = Guard(impl=got, name=f"{self.sut.name} (forked child)",
                        timeout=self.sut.timeout, journal=self.sut.journal)
            caps = getattr(got, "capabilities", None)
            if caps != self.caps:
                raise CheckFailure(PLUGIN, f"{self.sut.name}.dup_mm() returned a child whose "
                                             f"capabilities {caps!r} are not the parent's "
                                             f"{self.caps!r}")
            kid_view = self._sut_view(kid)
        result: int = got if is_int(got) else 0
        if self.ref is not None and LOCKSTEP in self.spec.enabled:
            if isinstance(expected, int) != is_int(got) or (is_int(got) and got != expected):
                self._fail(LOCKSTEP, f"dup_mm(): {self.spec.impl_name} returned "
                                     f"{_show_child(got)}, refmodel returned "
                                     f"{_show_child(expected)}", {}, None)
            if kid_view is not None and isinstance(expected, RefAddressSpace):
                difference = view_difference(expected.view(), kid_view)
                if difference:
                    self._fail(LOCKSTEP, f"after dup_mm() the children's views differ: "
                                         f"{difference}\nchild:\n{maps(kid_view)}", {}, None)
        self._compare("dup_mm", {}, None, None)
        record = VmaStep(op="dup_mm", args={}, result=result, before=before, after=self.view,
                         impl=self.checked_impl, child=kid_view, inherited=self.inherited)
        for check in self.step_checks["dup_mm"]:
            problems = list(check.fn(record))
            if problems:
                child_maps = "" if kid_view is None else "\nchild:\n" + maps(kid_view)
                self._fail(check.id, f"dup_mm() -> {_show_child(got)}: {check.title}:\n  "
                           + "\n  ".join(problems) + child_maps, {}, before)
        self.steps += 1
        if kid is None or kid_view is None:
            return
        kid_impl = GuardedImpl(kid, VIEW_CHECKS)
        for state_check in self.state_checks:  # the child is judged now even if it is dropped
            problems = list(state_check.fn(VmaState(impl=kid_impl, view=kid_view)))
            if problems:
                self._fail(state_check.id, f"in the child of dup_mm(): {state_check.title}:\n  "
                           + "\n  ".join(problems) + "\nchild:\n" + maps(kid_view), {}, None)
        if continue_in_child:
            self.sut, self.checked_impl, self.view = kid, kid_impl, kid_view
            self.inherited = anon_vmas(kid_view)
            self.ref = expected if isinstance(expected, RefAddressSpace) else None

    def _compare(self, op: str, args: dict[str, Any], result: int | None,
                 expected: int | None) -> None:
        if self.ref is None or LOCKSTEP not in self.spec.enabled:
            return
        call = describe_call(op, args)
        if result != expected:
            self._fail(LOCKSTEP, f"{call}: {self.spec.impl_name} returned {_show(result)}, "
                                 f"refmodel returned {_show(expected)}", args, None)
        difference = view_difference(self.ref.view(), self.view)
        if difference:
            self._fail(LOCKSTEP, f"after {call} the views differ: {difference}", args, None)

    # -- invariants ----------------------------------------------------------------------------

    def invariants_hold(self) -> None:
        """Every state invariant, after every step (they cost O(VMAs))."""
        state = VmaState(impl=self.checked_impl, view=self.view)
        for check in self.state_checks:
            problems = list(check.fn(state))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems), {}, None)

    def teardown(self) -> None:
        """Nothing is held outside the implementation."""

    # -- failure reporting ---------------------------------------------------------------------

    def _fail(self, check_id: str, message: str, args: dict[str, Any],
              before: MmView | None) -> None:
        addr = next((args[k] for k in ("addr", "old_addr") if k in args), None)
        length = next((args[k] for k in ("length", "new_len") if k in args), PAGE_SIZE)
        picture = "address space after the step (/proc/self/maps style):\n" + maps(self.view)
        if isinstance(addr, int) and isinstance(length, int) and 0 <= addr < TASK_SIZE:
            length = min(max(length, 0), 48 * PAGE_SIZE)
            if before is not None:
                picture += "\nbefore, " + diagram(before, addr, length)
            picture += "\nafter, " + diagram(self.view, addr, length)
        raise CheckFailure(check_id, f"{message}\n{picture}")

    # -- rule bodies ---------------------------------------------------------------------------

    def at(self, page: int) -> int:
        return self.window + page * PAGE_SIZE

    def do_mmap_anon(self, page: int, pages: int, prot: int, shared: bool, fixed: bool,
                     extra: int) -> None:
        """An anonymous mapping at (or hinted at) a window page."""
        self.trace.rule("mmap_anon", page=page, pages=pages, prot=prot, shared=shared,
                        fixed=fixed, extra=extra)
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | extra
        self.step("mmap", addr=self.at(page), length=pages * PAGE_SIZE, prot=prot,
                  flags=flags | (MAP_FIXED if fixed else 0), fd=-1, offset=0)

    def do_mmap_top(self, pages: int, prot: int) -> None:
        """A private anonymous mapping wherever the implementation puts it."""
        self.trace.rule("mmap_top", pages=pages, prot=prot)
        self.step("mmap", addr=0, length=pages * PAGE_SIZE, prot=prot,
                  flags=MAP_PRIVATE | MAP_ANONYMOUS, fd=-1, offset=0)

    def do_mmap_file(self, index: int, page: int, pages: int, prot: int, shared: bool,
                     fixed: bool, offset_pages: int) -> None:
        """A file mapping of an opened file (offsets may lie past its end)."""
        self.trace.rule("mmap_file", index=index, page=page, pages=pages, prot=prot,
                        shared=shared, fixed=fixed, offset_pages=offset_pages)
        fd = self.fds[index % len(self.fds)] if self.fds else 3
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | (MAP_FIXED if fixed else 0)
        self.step("mmap", addr=self.at(page), length=pages * PAGE_SIZE, prot=prot, flags=flags,
                  fd=fd, offset=offset_pages * PAGE_SIZE)

    def do_munmap(self, page: int, pages: int) -> None:
        self.trace.rule("munmap", page=page, pages=pages)
        self.step("munmap", addr=self.at(page), length=pages * PAGE_SIZE)

    def do_mprotect(self, page: int, pages: int, prot: int) -> None:
        self.trace.rule("mprotect", page=page, pages=pages, prot=prot)
        self.step("mprotect", addr=self.at(page), length=pages * PAGE_SIZE, prot=prot)

    def do_madvise(self, page: int, pages: int, advice: int, skew: int) -> None:
        """madvise on the window; ``skew`` adds bytes to the length (rounded up) or, when
        negative, misaligns the start."""
        self.trace.rule("madvise", page=page, pages=pages, advice=advice, skew=skew)
        addr = self.at(page) + (1 if skew < 0 else 0)
        self.step("madvise", addr=addr, length=pages * PAGE_SIZE + max(skew, 0), advice=advice)

    def do_mremap(self, page: int, old_pages: int, new_pages: int, flags: int,
                  new_page: int) -> None:
        """old_pages 0 means the whole VMA at (or after) the page: in-place growth, moves."""
        self.trace.rule("mremap", page=page, old_pages=old_pages, new_pages=new_pages,
                        flags=flags, new_page=new_page)
        old_addr, old_len = self.at(page), old_pages * PAGE_SIZE
        vma = self.view.find(old_addr)
        if old_pages == 0 and vma is not None and vma.start < self.at(WINDOW_PAGES):
            old_addr, old_len = vma.start, vma.end - vma.start
        self.step("mremap", old_addr=old_addr, old_len=old_len,
                  new_len=new_pages * PAGE_SIZE, flags=flags, new_addr=self.at(new_page))

    def do_brk(self, delta: int) -> None:
        """Move the break by delta bytes (any alignment)."""
        self.trace.rule("brk", delta=delta)
        self.step("brk", addr=max(self.view.brk + delta, 0))

    def do_touch(self, page: int, offset: int, write: bool) -> None:
        self.trace.rule("touch", page=page, offset=offset, write=write)
        self.step("touch", addr=self.at(page) + offset, write=write)

    def do_touch_stack(self, pages_below: int, write: bool) -> None:
        """A fault below the lowest stack VMA: stack growth, the guard page, RLIMIT_STACK."""
        self.trace.rule("touch_stack", pages_below=pages_below, write=write)
        stack = [v for v in self.view.vmas if v.flags & VM_GROWSDOWN]
        base = stack[-1].start if stack else TASK_SIZE - PAGE_SIZE
        self.step("touch", addr=base - pages_below * PAGE_SIZE, write=write)

    def do_open_file(self, pages: int, mode: int) -> None:
        self.trace.rule("open_file", pages=pages, mode=mode)
        fd = self.step("open_file", size=pages * PAGE_SIZE - (pages % 3), mode=mode)
        if fd >= 0:
            self.fds.append(fd)

    def do_at_limit(self, slack: int, op: str, page: int, pages: int, prot: int) -> None:
        """max_map_count set a few VMAs from map_count for one mmap, munmap, mprotect or
        madvise, then back to the default: the limits' edges without starving the run."""
        self.trace.rule("at_limit", slack=slack, op=op, page=page, pages=pages, prot=prot)
        big = [v for v in self.view.vmas if v.pages >= 3 and self.window <= v.start
               < self.at(WINDOW_PAGES)]
        if big and op != "mmap":  # strictly inside one VMA, no charge: the split limit
            vma = big[page % len(big)]
            page, pages = (vma.start - self.window) // PAGE_SIZE + 1, 1
            prot = PROT_NONE if vma.flags & PROT_READ else PROT_READ
        self.step("set_sysctl", name="max_map_count", value=max(self.view.map_count + slack, 0))
        self._one(op, page, pages, prot)
        self.step("set_sysctl", name="max_map_count", value=DEFAULT_MAX_MAP_COUNT)

    def do_overcommit(self, mode: int, ratio: int, op: str, page: int, pages: int,
                      prot: int) -> None:
        """One mmap, mprotect or brk under another overcommit mode, then back to GUESS."""
        self.trace.rule("overcommit", mode=mode, ratio=ratio, op=op, page=page, pages=pages,
                        prot=prot)
        self.step("set_sysctl", name="overcommit_memory", value=mode)
        self.step("set_sysctl", name="overcommit_ratio", value=ratio)
        self._one(op, page, pages, prot)
        self.step("set_sysctl", name="overcommit_memory", value=OVERCOMMIT_GUESS)
        self.step("set_sysctl", name="overcommit_ratio", value=50)

    def _one(self, op: str, page: int, pages: int, prot: int) -> None:
        length = pages * PAGE_SIZE
        if op == "mmap":
            self.step("mmap", addr=self.at(page), length=length, prot=prot,
                      flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, fd=-1, offset=0)
        elif op == "munmap":
            self.step("munmap", addr=self.at(page), length=length)
        elif op == "brk":
            self.step("brk", addr=self.view.brk + length)
        elif op == "madvise":  # flip VM_DONTCOPY: a split (-EAGAIN at the limit)
            vma = self.view.find(self.at(page))
            copied = vma is None or not vma.flags & VM_DONTCOPY
            self.step("madvise", addr=self.at(page), length=length,
                      advice=MADV_DONTFORK if copied else MADV_DOFORK)
        else:
            self.step("mprotect", addr=self.at(page), length=length, prot=prot)

    def do_fork(self, child: bool, strict_ratio: int, locked_page: int) -> None:
        """dup_mm, then on in the parent or the child.  locked_page >= 0 first maps that
        window page MAP_LOCKED (mlocked memory is what fork must not lock in the child);
        strict_ratio >= 0 forks under OVERCOMMIT_NEVER with that ratio (the charge tested on
        the parent's mm may fail), and the mm the run goes on in is put back to GUESS."""
        self.trace.rule("fork", child=child, strict_ratio=strict_ratio, locked_page=locked_page)
        if locked_page >= 0:
            self.step("mmap", addr=self.at(locked_page), length=PAGE_SIZE,
                      prot=PROT_READ | PROT_WRITE,
                      flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_LOCKED, fd=-1,
                      offset=0)
        strict = strict_ratio >= 0 and Capability.OVERCOMMIT in self.caps
        if strict:
            self.step("set_sysctl", name="overcommit_memory", value=OVERCOMMIT_NEVER)
            self.step("set_sysctl", name="overcommit_ratio", value=strict_ratio)
        self.fork_step(child)
        if strict:
            self.step("set_sysctl", name="overcommit_memory", value=OVERCOMMIT_GUESS)
            self.step("set_sysctl", name="overcommit_ratio", value=50)

    def do_populate(self, page: int, pages: int, prot: int) -> None:
        """A written private mapping (it has an anon_vma), then given its protection."""
        self.trace.rule("populate", page=page, pages=pages, prot=prot)
        addr = self.at(page)
        if self.step("mmap", addr=addr, length=pages * PAGE_SIZE, prot=PROT_READ | PROT_WRITE,
                     flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, fd=-1, offset=0) != addr:
            return
        if Capability.TOUCH in self.caps:
            self.step("touch", addr=addr, write=True)
        self.step("mprotect", addr=addr, length=pages * PAGE_SIZE, prot=prot)

    def do_map_beside(self, index: int, pages: int, prot: int, below: bool,
                      file_index: int, offset_pages: int) -> None:
        """MAP_FIXED right above (or below) an existing window VMA: the merge cases.  With
        file_index >= 0 a file mapping, at a file offset that may or may not continue the
        neighbour's."""
        self.trace.rule("map_beside", index=index, pages=pages, prot=prot, below=below,
                        file_index=file_index, offset_pages=offset_pages)
        near = [v for v in self.view.vmas if self.window <= v.start < self.at(WINDOW_PAGES)]
        if not near:
            return
        vma = near[index % len(near)]
        addr = vma.start - pages * PAGE_SIZE if below else vma.end
        fd_of = {f.ident: f.fd for f in self.view.files if f.fd is not None}
        if file_index >= 0 and self.fds:
            # the neighbour's own file when it has one, at an offset that continues its
            # pgoff when offset_pages is 4 (and misses it by a little otherwise)
            fd = fd_of.get(vma.file or -1, self.fds[file_index % len(self.fds)])
            continued = vma.pgoff - pages if below else vma.pgoff + vma.pages
            offset = max(continued + offset_pages - 4, 0) * PAGE_SIZE
            flags = MAP_PRIVATE | MAP_FIXED
        else:
            fd, flags, offset = -1, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, 0
        self.step("mmap", addr=addr, length=pages * PAGE_SIZE, prot=prot, flags=flags, fd=fd,
                  offset=offset)

    def do_fragment(self, page: int, count: int) -> None:
        """count one-page MAP_FIXED mappings with alternating protections: many VMAs fast."""
        self.trace.rule("fragment", page=page, count=count)
        for i in range(count):
            self.step("mmap", addr=self.at(page + i), length=PAGE_SIZE,
                      prot=PROT_READ if i % 2 else PROT_READ | PROT_WRITE,
                      flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, fd=-1, offset=0)

    def do_bad_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int,
                    offset: int) -> None:
        self.trace.rule("bad_mmap", addr=addr, length=length, prot=prot, flags=flags, fd=fd,
                        offset=offset)
        self.step("mmap", addr=addr, length=length, prot=prot, flags=flags, fd=fd,
                  offset=offset)

    def do_merge_case(self, page: int, sizes: tuple[int, int, int], touched: int,
                      part: int) -> None:
        """Three adjacent private mappings P, A, N with protections RW, R, RW, some of them
        written (bit i of touched), then part of A (0: all, 1: head, 2: tail, 3: middle)
        made RW: vma_merge's mprotect cases 4-8 and the anon_vma rules."""
        self.trace.rule("merge_case", page=page, sizes=list(sizes), touched=touched, part=part)
        addr = self.at(page)
        prots = (PROT_READ | PROT_WRITE, PROT_READ, PROT_READ | PROT_WRITE)
        starts = []
        for i, (pages, prot) in enumerate(zip(sizes, prots, strict=True)):
            starts.append(addr)
            self.step("mmap", addr=addr, length=pages * PAGE_SIZE, prot=PROT_READ | PROT_WRITE,
                      flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, fd=-1, offset=0)
            if touched >> i & 1 and Capability.TOUCH in self.caps:
                self.step("touch", addr=addr, write=True)
            self.step("mprotect", addr=addr, length=pages * PAGE_SIZE, prot=prot)
            addr += pages * PAGE_SIZE
        lo, hi = starts[1], starts[1] + sizes[1] * PAGE_SIZE
        if sizes[1] > 1 and part in (1, 3):
            hi -= PAGE_SIZE
        if sizes[1] > 1 and part in (2, 3):
            lo += PAGE_SIZE
        self.step("mprotect", addr=lo, length=max(hi - lo, PAGE_SIZE), prot=PROT_READ | PROT_WRITE)

    def do_file_pair(self, page: int, sizes: tuple[int, int], skew: int, shared: bool,
                     prot: int) -> None:
        """Two adjacent mappings of one file; the second's offset continues the first's
        when skew is 0: vma_merge's pgoff rule."""
        self.trace.rule("file_pair", page=page, sizes=list(sizes), skew=skew, shared=shared,
                        prot=prot)
        if not self.fds:
            fd = self.step("open_file", size=64 * PAGE_SIZE, mode=O_RDWR)
            if fd < 0:
                return
            self.fds.append(fd)
        fd = self.fds[page % len(self.fds)]
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_FIXED
        first, second = sizes
        self.step("mmap", addr=self.at(page), length=first * PAGE_SIZE, prot=prot, flags=flags,
                  fd=fd, offset=4 * PAGE_SIZE)
        self.step("mmap", addr=self.at(page + first), length=second * PAGE_SIZE, prot=prot,
                  flags=flags, fd=fd, offset=max(4 + first + skew, 0) * PAGE_SIZE)

    def do_odd_mmap(self, defect: str, page: int, pages: int, prot: int,
                    shared: bool) -> None:
        """A sensible anonymous or file mapping with exactly one thing wrong with it."""
        self.trace.rule("odd_mmap", defect=defect, page=page, pages=pages, prot=prot,
                        shared=shared)
        addr, length = self.at(page), pages * PAGE_SIZE
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
        fd, offset = -1, 0
        if defect == "unaligned":
            addr += 1 + page * 97
        elif defect == "zero_length":
            length = 0
        elif defect == "huge_length":
            length = (1 << 64) - PAGE_SIZE * pages
        elif defect == "beyond_task_size":
            addr = TASK_SIZE - PAGE_SIZE * (pages - 1)
        elif defect == "below_min_addr":
            addr = 0
        elif defect == "both_types":
            flags |= MAP_SHARED | MAP_PRIVATE
        elif defect == "no_type":
            flags &= ~(MAP_SHARED | MAP_PRIVATE)
        elif defect == "unknown_flag":
            flags |= 0x0800_0000 | 0x10_0000
        elif defect == "growsdown_shared":
            flags |= MAP_SHARED | MAP_GROWSDOWN
            flags &= ~MAP_PRIVATE
        elif defect == "unaligned_offset":
            offset = 1 + page
        elif defect == "offset_overflow":
            offset = (1 << 64) - PAGE_SIZE
        elif defect == "bad_fd":
            flags &= ~MAP_ANONYMOUS
            fd = 99
        elif defect in ("file_past_end", "readonly_shared") and self.fds:
            flags &= ~MAP_ANONYMOUS
            fd = self.fds[page % len(self.fds)]
            offset = (16 + page) * PAGE_SIZE if defect == "file_past_end" else 0
            if defect == "readonly_shared":
                flags = (flags & ~MAP_PRIVATE) | MAP_SHARED
                prot |= PROT_WRITE
        self.step("mmap", addr=addr, length=length, prot=prot, flags=flags, fd=fd,
                  offset=offset)

    def do_bad_call(self, op: str, addr: int, length: int, prot: int, flags: int,
                    other: int) -> None:
        """munmap, mprotect, mremap, brk or touch on arbitrary arguments."""
        self.trace.rule("bad_call", op=op, addr=addr, length=length, prot=prot, flags=flags,
                        other=other)
        args: dict[str, Any] = {
            "munmap": {"addr": addr, "length": length},
            "mprotect": {"addr": addr, "length": length, "prot": prot},
            "mremap": {"old_addr": addr, "old_len": length, "new_len": other, "flags": flags,
                       "new_addr": other ^ length},
            "brk": {"addr": addr},
            "touch": {"addr": addr, "write": bool(flags & 1)},
        }[op]
        self.step(op, **args)


def _show(value: Any) -> str:
    if isinstance(value, int):
        return describe(value) if value < 0 else hex(value)
    return repr(value)


def anon_vmas(view: MmView) -> frozenset[int]:
    return frozenset(v.anon_vma for v in view.vmas if v.anon_vma is not None)


def _show_child(value: Any) -> str:
    return _show(value) if is_int(value) else "a child address space"


def view_difference(expected: MmView, actual: MmView) -> str:
    """The first difference between two views, in words ("" when equal)."""
    if expected == actual:
        return ""
    for want, got in zip(expected.vmas, actual.vmas, strict=False):
        if want != got:
            return f"VMA {got}, refmodel {want}"
    if len(expected.vmas) != len(actual.vmas):
        return f"{len(actual.vmas)} VMAs, refmodel {len(expected.vmas)}"
    for field in attrs.fields(MmView):
        want_v, got_v = getattr(expected, field.name), getattr(actual, field.name)
        if want_v != got_v:
            return f"{field.name} {got_v!r}, refmodel {want_v!r}"
    return "views differ"


def make_vma_machine(spec: MachineSpec) -> type[VmaMachineBase]:
    """A machine class for one implementation, mode and machine."""
    pages = st.integers(1, MAX_PAGES)
    window = st.integers(0, WINDOW_PAGES - 1)

    def has(cap: Capability) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return when_capable(spec, cap)

    class VmaMachine(VmaMachineBase):
        @rule(page=window, pages=pages, prot=PROTS, shared=st.booleans(), fixed=st.booleans(),
              extra=EXTRA_MAP_FLAGS)
        def mmap_anon(self, page: int, pages: int, prot: int, shared: bool, fixed: bool,
                      extra: int) -> None:
            self.do_mmap_anon(page, pages, prot, shared, fixed, extra)

        @rule(pages=pages, prot=PROTS)
        def mmap_top(self, pages: int, prot: int) -> None:
            self.do_mmap_top(pages, prot)

        @has(Capability.FILES)
        @rule(index=st.integers(0, MAX_FDS), page=window, pages=pages, prot=PROTS,
              shared=st.booleans(), fixed=st.booleans(), offset_pages=st.integers(0, 16))
        def mmap_file(self, index: int, page: int, pages: int, prot: int, shared: bool,
                      fixed: bool, offset_pages: int) -> None:
            self.do_mmap_file(index, page, pages, prot, shared, fixed, offset_pages)

        @rule(page=window, pages=pages)
        def munmap(self, page: int, pages: int) -> None:
            self.do_munmap(page, pages)

        @rule(page=window, pages=pages, prot=PROTS)
        def mprotect(self, page: int, pages: int, prot: int) -> None:
            self.do_mprotect(page, pages, prot)

        @has(Capability.MADVISE)
        @rule(page=window, pages=st.integers(0, 2 * MAX_PAGES), advice=ADVICE,
              skew=st.sampled_from([0, 0, 0, 1, -1]))
        def madvise(self, page: int, pages: int, advice: int, skew: int) -> None:
            self.do_madvise(page, pages, advice, skew)

        @rule(page=window, old_pages=st.one_of(st.just(0), st.integers(0, MAX_PAGES)),
              new_pages=st.integers(1, 2 * MAX_PAGES),
              flags=st.sampled_from([0, 0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED]),
              new_page=window)
        def mremap(self, page: int, old_pages: int, new_pages: int, flags: int,
                   new_page: int) -> None:
            self.do_mremap(page, old_pages, new_pages, flags, new_page)

        @rule(delta=st.integers(-6 * PAGE_SIZE, 10 * PAGE_SIZE))
        def brk(self, delta: int) -> None:
            self.do_brk(delta)

        @has(Capability.TOUCH)
        @rule(page=window, offset=st.integers(0, PAGE_SIZE - 1), write=st.booleans())
        def touch(self, page: int, offset: int, write: bool) -> None:
            self.do_touch(page, offset, write)

        @has(Capability.TOUCH)
        @rule(pages_below=st.integers(0, 2100), write=st.booleans())
        def touch_stack(self, pages_below: int, write: bool) -> None:
            self.do_touch_stack(pages_below, write)

        @has(Capability.FILES)
        @precondition(lambda self: len(self.fds) < MAX_FDS)
        @rule(pages=st.integers(0, 8), mode=st.sampled_from([O_RDONLY, O_WRONLY, O_RDWR]))
        def open_file(self, pages: int, mode: int) -> None:
            self.do_open_file(pages, mode)

        @rule(slack=st.integers(-1, 2),
              op=st.sampled_from(["mmap", "munmap", "mprotect", "madvise"]),
              page=window, pages=pages, prot=PROTS)
        def at_limit(self, slack: int, op: str, page: int, pages: int, prot: int) -> None:
            if op == "madvise" and Capability.MADVISE not in self.caps:
                return
            self.do_at_limit(slack, op, page, pages, prot)

        @has(Capability.OVERCOMMIT)
        @rule(mode=st.integers(0, 2), ratio=st.sampled_from([0, 1, 50, 100]),
              op=st.sampled_from(["mmap", "mprotect", "brk"]), page=window,
              pages=st.sampled_from([1, 2, 4, 1024, 3000, 5000]), prot=PROTS)
        def overcommit(self, mode: int, ratio: int, op: str, page: int, pages: int,
                       prot: int) -> None:
            self.do_overcommit(mode, ratio, op, page, pages, prot)

        @has(Capability.FORK)
        @rule(child=st.booleans(), strict_ratio=st.sampled_from([-1, -1, -1, 0, 1, 5, 100]),
              locked_page=st.one_of(st.just(-1), window))
        def fork(self, child: bool, strict_ratio: int, locked_page: int) -> None:
            self.do_fork(child, strict_ratio, locked_page)

        @rule(page=window, pages=pages, prot=PROTS)
        def populate(self, page: int, pages: int, prot: int) -> None:
            self.do_populate(page, pages, prot)

        @rule(index=st.integers(0, 8), pages=pages, prot=PROTS, below=st.booleans(),
              file_index=st.integers(-2, MAX_FDS), offset_pages=st.integers(0, 8))
        def map_beside(self, index: int, pages: int, prot: int, below: bool, file_index: int,
                       offset_pages: int) -> None:
            self.do_map_beside(index, pages, prot, below, file_index, offset_pages)

        @rule(page=window, count=st.integers(2, 12))
        def fragment(self, page: int, count: int) -> None:
            self.do_fragment(page, count)

        @rule(addr=st.one_of(EDGY, window.map(lambda p: p * PAGE_SIZE)), length=LENGTHS,
              prot=ANY_PROT, flags=ANY_FLAGS, fd=st.sampled_from([-1, 3, 4, 99]),
              offset=OFFSETS)
        def bad_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int,
                     offset: int) -> None:
            self.do_bad_mmap(addr, length, prot, flags, fd, offset)

        @rule(page=st.integers(0, WINDOW_PAGES - 3 * MAX_PAGES),
              sizes=st.tuples(pages, pages, pages), touched=st.integers(0, 7),
              part=st.integers(0, 3))
        def merge_case(self, page: int, sizes: tuple[int, int, int], touched: int,
                       part: int) -> None:
            self.do_merge_case(page, sizes, touched, part)

        @has(Capability.FILES)
        @rule(page=st.integers(0, WINDOW_PAGES - 2 * MAX_PAGES), sizes=st.tuples(pages, pages),
              skew=st.integers(-2, 2), shared=st.booleans(), prot=PROTS)
        def file_pair(self, page: int, sizes: tuple[int, int], skew: int, shared: bool,
                      prot: int) -> None:
            self.do_file_pair(page, sizes, skew, shared, prot)

        @rule(defect=st.sampled_from(ODD_MMAP_DEFECTS), page=window, pages=pages, prot=PROTS,
              shared=st.booleans())
        def odd_mmap(self, defect: str, page: int, pages: int, prot: int,
                     shared: bool) -> None:
            self.do_odd_mmap(defect, page, pages, prot, shared)

        @rule(op=st.sampled_from(["munmap", "mprotect", "mremap", "brk", "touch"]),
              addr=EDGY, length=EDGY, prot=ANY_PROT, flags=st.integers(0, 7), other=EDGY)
        def bad_call(self, op: str, addr: int, length: int, prot: int, flags: int,
                     other: int) -> None:
            if op == "touch" and Capability.TOUCH not in self.caps:
                return
            self.do_bad_call(op, addr, length, prot, flags, other)

    VmaMachine.spec = spec
    VmaMachine.__name__ = VmaMachine.__qualname__ = (
        f"Vma{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return VmaMachine


__all__ = ["MachineSpec", "VmaMachineBase", "make_vma_machine"]
