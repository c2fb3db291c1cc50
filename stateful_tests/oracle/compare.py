"""Run a generated sequence on a model and on the host, mask the known differences, compare.

The model goes first.  Before each call it is asked whether the call falls into one of the
areas where the running kernel no longer behaves as 4.6 (the rows of the table in
``specs/vma_oracle.md``; each rule below names its row): if so, the call is dropped from the
sequence before the host ever sees it, so the two runs stay comparable.  Two kinds of rule:

* *before* rules look at the address space the call finds (an mremap that would shrink an
  unmapped range, a touch that would grow a stack);
* *after* rules run the call and look at the result: if it leaves two neighbouring VMAs
  apart that the host would have merged for a reason that did not exist in 4.6 (an anon_vma
  that 6.16 no longer lets stand in the way, a VM_ACCOUNT that 6.6 drops on mprotect), the
  call is dropped and the model rebuilt without it.

The surviving calls then run on the host, and each call's result and the window's maps after
it are compared.  The maps projection is what ``/proc/self/maps`` can show: start, end,
``rwxp/s``, file offset (0 for private anonymous memory) and file identity.  Shared anonymous
objects are labelled by the call after which they first appear, on each side, so identities
are compared without relying on inode or ident numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from specs.errno import describe
from specs.machine import PAGE_SIZE, MachineConfig
from specs.vma import (
    MAP_FIXED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_GROWSDOWN,
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_MAYSHARE,
    VM_READ,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_WRITE,
    AddressSpace,
    Capability,
    MmView,
    VmaView,
    page_align,
)
from stateful_tests.oracle.generate import Program
from stateful_tests.oracle.host import (
    BAD_FD,
    WINDOW_BASE,
    WINDOW_SIZE,
    HostProgram,
    HostRun,
    MapsLine,
    errno_name,
    run_on_host,
)

#: 4.12's stack_guard_gap default: 256 pages [host: mm/mmap.c stack_guard_gap]
STACK_GUARD_GAP: Final = 256 * PAGE_SIZE
ULONG: Final = (1 << 64) - 1

#: A maps line as compared: (start, end, perms, offset, file label)
Line = tuple[int, int, str, int, str]


# ---------------------------------------------------------------------------------------------
# Masking rules: each returns the key of its row in specs/vma_oracle.md, or None
# ---------------------------------------------------------------------------------------------


def _containing(view: MmView, addr: int) -> VmaView | None:
    vma = view.find(addr)
    return vma if vma is not None and vma.start <= addr else None


def _next_after(view: MmView, addr: int) -> VmaView | None:
    return view.find(addr)


def mremap_rule(call: Sequence[Any], view: MmView) -> str | None:
    """The mremap rows: shrink of an unmapped range, fixed moves that 4.6 starts by
    unmapping the target, multi-VMA moves, and in-place growth that reaches the next VMA."""
    _, old, old_len, new_len, flags, _new_addr = call
    old, old_len, new_len = old & ULONG, page_align(old_len), page_align(new_len)
    if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED) or old & (PAGE_SIZE - 1) or not new_len:
        return None  # refused for its arguments by both, before any lookup
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return None
    vma = _containing(view, old)
    if flags & MREMAP_FIXED:
        if vma is None or old + old_len > vma.end:
            return "mremap-fixed-efault"
        return None
    if new_len <= old_len:
        return "mremap-shrink-unmapped" if vma is None else None
    if vma is not None and old + old_len == vma.end:
        nxt = _next_after(view, vma.end)
        if nxt is not None and nxt.start == old + new_len:
            return "mremap-grow-merge"
    return None


def touch_rule(call: Sequence[Any], view: MmView) -> str | None:
    """The touch rows: stack growth on a fault, and reads of VMAs without VM_READ (a user
    read fault allows them, the host's get_user_pages probe does not).  A file page past the
    end of the file needs no rule: 4.6's SIGBUS and the probe's -EFAULT both read -EFAULT."""
    _, addr, write = call
    vma = _containing(view, addr)
    if vma is None:
        nxt = _next_after(view, addr)
        # the exec-time stack at the top of the address space is too far away to grow
        # (RLIMIT_STACK): both refuse; a stack VMA inside the window is the masked case
        return "touch-stack" if nxt is not None and nxt.flags & VM_GROWSDOWN \
            and in_window(nxt.start) else None
    if vma.flags & VM_GROWSDOWN and addr < vma.start + PAGE_SIZE:
        return "touch-stack"
    if not write and not vma.flags & VM_READ and vma.flags & (VM_WRITE | VM_EXEC):
        return "touch-gup-read"
    return None


def hint_rule(call: Sequence[Any], view: MmView) -> str | None:
    """``hint-guard-gap``: a hint that ends within the host's guard gap below a stack VMA."""
    _, addr, length, _prot, flags, _slot, _off = call
    if flags & MAP_FIXED or not addr or length >= 1 << 47:
        return None
    hint = addr & ~(PAGE_SIZE - 1)
    nxt = _next_after(view, hint)
    if nxt is not None and nxt.flags & VM_GROWSDOWN \
            and hint + page_align(length) > nxt.start - STACK_GUARD_GAP:
        return "hint-guard-gap"
    return None


def mprotect_rule(call: Sequence[Any], view: MmView) -> str | None:
    """``outside-window``: mprotect with PROT_GROWSDOWN starts at the first VMA above the
    address, wherever it is; outside the window that VMA is the model's exec stack on one
    side and some mapping of the test process on the other (and changing the latter could
    take the host's child down), so such a call is not sent."""
    _, addr, _length, prot = call
    if prot & PROT_GROWSDOWN:
        nxt = _next_after(view, addr & ULONG)
        if nxt is None or not in_window(nxt.start):
            return "outside-window"
    return None


def _host_flags(vma: VmaView) -> int:
    """vm_flags as the host would hold them: no VM_SOFTDIRTY (the host is built without
    CONFIG_MEM_SOFT_DIRTY) and no VM_ACCOUNT on a never-faulted private anonymous VMA that
    is not writable (6.6 drops it when mprotect takes write away)."""
    flags = vma.flags & ~VM_SOFTDIRTY
    if vma.file is None and vma.anon_vma is None and not flags & VM_WRITE:
        flags &= ~VM_ACCOUNT
    return flags


def _ghost(vma: VmaView) -> bool:
    """A VMA that holds VM_ACCOUNT in 4.6 but not on the host (see _host_flags)."""
    return _host_flags(vma) != vma.flags & ~VM_SOFTDIRTY


def ghost_ranges(call: Sequence[Any], view: MmView) -> list[tuple[int, int]]:
    """The ranges whose VM_ACCOUNT differs between 4.6 and the host after ``call``: those
    that already differ, plus the never-faulted writable private anonymous memory an
    mprotect without PROT_WRITE is about to take write away from."""
    ranges = [(v.start, v.end) for v in view.vmas if _ghost(v)]
    if call[0] == "mprotect" and not call[3] & 0x2:
        start, end = call[1] & ULONG, (call[1] & ULONG) + page_align(call[2])
        for v in view.vmas:
            if v.file is None and v.anon_vma is None and v.flags & VM_WRITE \
                    and v.flags & VM_ACCOUNT and v.start < end and start < v.end:
                ranges.append((max(v.start, start), min(v.end, end)))
    return ranges


def account_rule(call: Sequence[Any], before: MmView, after: MmView) -> str | None:
    """``merge-account``, the other direction: 4.6 merged memory whose VM_ACCOUNT the host
    has dropped with a faulted neighbour that keeps it (or moved such memory, where it may
    merge at the destination)."""
    ghosts = ghost_ranges(call, before)
    if not ghosts:
        return None
    if call[0] == "mremap":
        old, old_len = call[1] & ULONG, page_align(call[2])
        if any(s < old + old_len and old < e for s, e in ghosts):
            return "merge-account"
        return None
    for v in after.vmas:
        if v.anon_vma is not None and any(s < v.end and v.start < e for s, e in ghosts):
            return "merge-account"
    return None


def merge_rule(view: MmView) -> str | None:
    """``merge-account`` / ``merge-anon-vma``: two neighbours the model keeps apart, which
    the host would have merged only because of a change made after 4.6."""
    for prev, nxt in zip(view.vmas, view.vmas[1:], strict=False):
        if prev.end != nxt.start or prev.file != nxt.file or (prev.flags | nxt.flags) & VM_SPECIAL:
            continue
        if prev.pgoff + prev.pages != nxt.pgoff:
            continue
        if _host_flags(prev) != _host_flags(nxt):
            continue
        same_flags = (prev.flags ^ nxt.flags) & ~VM_SOFTDIRTY == 0
        if prev.anon_vma == nxt.anon_vma:
            if not same_flags:
                return "merge-account"
        elif prev.anon_vma is None or nxt.anon_vma is None:
            return "merge-anon-vma"
    return None


# ---------------------------------------------------------------------------------------------
# Running the model
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class ModelRun:
    """The model's side: the calls it kept (in ``host`` format), their results and views, and
    the calls it dropped with the rule that dropped them (by index into the program)."""

    kept: tuple[tuple[Any, ...], ...]
    kept_index: tuple[int, ...]
    results: tuple[int, ...]
    views: tuple[MmView, ...]
    dropped: tuple[tuple[int, str], ...]
    fds: tuple[int, ...]


def _apply(model: AddressSpace, call: Sequence[Any], fds: Sequence[int]) -> int:
    name = call[0]
    if name == "mmap":
        _, addr, length, prot, flags, slot, offset = call
        fd = slot if slot in (-1, BAD_FD) else fds[slot]
        return model.mmap(addr, length, prot, flags, fd, offset)
    if name == "munmap":
        return model.munmap(call[1], call[2])
    if name == "mprotect":
        return model.mprotect(call[1], call[2], call[3])
    if name == "mremap":
        return model.mremap(call[1], call[2], call[3], call[4], call[5])
    if name == "touch":
        return model.touch(call[1], bool(call[2]))
    raise ValueError(f"unknown call {name!r}")


def run_model(program: Program, factory: Callable[[MachineConfig], AddressSpace],
              config: MachineConfig, masking: bool = True) -> ModelRun:
    """Run the program on a fresh model, dropping the calls a masking rule claims
    (``masking=False`` keeps every call that is safe for the host, to show that a rule is
    needed; only ``outside-window`` still applies then)."""
    model = factory(config)
    fds = tuple(model.open_file(f.size, f.mode) for f in program.files)
    can_touch = Capability.TOUCH in model.capabilities
    kept: list[tuple[Any, ...]] = []
    kept_index: list[int] = []
    results: list[int] = []
    views: list[MmView] = []
    dropped: list[tuple[int, str]] = []
    view = model.view()
    for index, call in enumerate(program.calls):
        reason: str | None = None
        if call[0] == "mremap":
            reason = mremap_rule(call, view)
        elif call[0] == "touch":
            reason = touch_rule(call, view) if can_touch else "model-no-touch"
        elif call[0] == "mmap":
            reason = hint_rule(call, view)
        elif call[0] == "mprotect":
            reason = mprotect_rule(call, view)
        if not masking and reason not in ("outside-window", "model-no-touch"):
            reason = None
        if reason is None:
            result = _apply(model, call, fds)
            after = model.view()
            reason = (merge_rule(after) or account_rule(call, view, after)) if masking \
                else None
            if reason is not None:
                # undo by replaying the kept calls on a fresh model: drops are rare, and
                # models are deterministic, so this is cheaper than a copy before every call
                model = factory(config)
                for fd_spec in program.files:
                    model.open_file(fd_spec.size, fd_spec.mode)
                for earlier in kept:
                    _apply(model, earlier, fds)
            else:
                view = after
                kept.append(tuple(call))
                kept_index.append(index)
                results.append(result)
                views.append(after)
        if reason is not None:
            dropped.append((index, reason))
    return ModelRun(kept=tuple(kept), kept_index=tuple(kept_index), results=tuple(results),
                    views=tuple(views), dropped=tuple(dropped), fds=fds)


# ---------------------------------------------------------------------------------------------
# Projections and comparison
# ---------------------------------------------------------------------------------------------


def in_window(addr: int) -> bool:
    """Whether an address lies inside the oracle's window."""
    return WINDOW_BASE <= addr < WINDOW_BASE + WINDOW_SIZE


def result_key(call: Sequence[Any], result: int) -> int | str:
    """A call's result as compared: an address outside the window (a placement the
    generator does not pin down: no hint, an occupied hint, an mremap move) is ``"outside"``."""
    if call[0] in ("mmap", "mremap") and result >= 0 and not in_window(result):
        return "outside"
    return result


class _Labeller:
    """Names shared-anonymous objects after the step at which they first appear."""

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}

    def name(self, key: Any, step: int) -> str:
        if key not in self.names:
            self.names[key] = f"shm@{step}.{len(self.names)}"
        return self.names[key]


def model_lines(view: MmView, fds: Sequence[int], labels: _Labeller, step: int) -> list[Line]:
    """The model's VMAs inside the window as /proc/self/maps would show them."""
    files = {f.ident: f for f in view.files}
    slot = {fd: i for i, fd in enumerate(fds)}
    out: list[Line] = []
    for vma in view.vmas:
        if vma.end <= WINDOW_BASE or vma.start >= WINDOW_BASE + WINDOW_SIZE:
            continue
        perms = "".join(c if vma.flags & bit else "-" for bit, c in
                        ((VM_READ, "r"), (VM_WRITE, "w"), (VM_EXEC, "x")))
        perms += "s" if vma.flags & VM_MAYSHARE else "p"
        label, offset = "anon", 0
        if vma.file is not None:
            file = files[vma.file]
            offset = vma.pgoff * PAGE_SIZE
            if file.shmem or file.fd is None:
                label = labels.name(file.ident, step)
            else:
                label = f"file{slot.get(file.fd, file.fd)}"
        out.append((vma.start, vma.end, perms, offset, label))
    return out


def host_lines(maps: Sequence[MapsLine], labels: _Labeller, step: int) -> list[Line]:
    """The host's window lines in the same form."""
    out: list[Line] = []
    for line in maps:
        if line.file is None:
            label = "anon"
        elif isinstance(line.file, int):
            label = f"file{line.file}"
        else:
            label = labels.name(line.file, step)
        out.append((line.start, line.end, line.perms, line.offset, label))
    return out


@attrs.frozen
class Divergence:
    """The first step at which host and model disagree, with everything a report needs."""

    step: int
    what: str
    host_result: int | None
    model_result: int
    host_maps: tuple[Line, ...]
    model_maps: tuple[Line, ...]
    prev_maps: tuple[Line, ...]


@attrs.frozen
class Outcome:
    """One example's verdict."""

    program: Program
    model: ModelRun
    host: HostRun
    divergence: Divergence | None
    #: a problem with the host run itself (setup, crash, timeout), reported as a failure
    host_problem: str = ""

    @property
    def ok(self) -> bool:
        return self.divergence is None and not self.host_problem


def compare(program: Program, model: ModelRun, host: HostRun) -> Outcome:
    """The first divergence between the two runs, if any."""
    if host.status != "ok":
        return Outcome(program, model, host, None,
                       host_problem=f"host run {host.status}: {host.message}")
    model_labels, host_labels = _Labeller(), _Labeller()
    prev: list[Line] = []
    for step, call in enumerate(model.kept):
        m_res, h_res = model.results[step], host.results[step]
        m_lines = model_lines(model.views[step], model.fds, model_labels, step)
        h_lines = host_lines(host.maps[step], host_labels, step)
        what = ""
        if result_key(call, m_res) != result_key(call, h_res):
            what = "result"
        elif m_lines != h_lines:
            what = "maps"
        if what:
            return Outcome(program, model, host, Divergence(
                step=step, what=what, host_result=h_res, model_result=m_res,
                host_maps=tuple(h_lines), model_maps=tuple(m_lines), prev_maps=tuple(prev)))
        prev = m_lines
    return Outcome(program, model, host, None)


def check_program(program: Program, factory: Callable[[MachineConfig], AddressSpace],
                  config: MachineConfig, timeout: float = 10.0,
                  masking: bool = True) -> Outcome:
    """Model, then host (with the model's surviving calls), then the comparison."""
    model = run_model(program, factory, config, masking=masking)
    host = run_on_host(HostProgram(calls=model.kept, files=program.files), timeout=timeout)
    return compare(program, model, host)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def describe_call(call: Sequence[Any]) -> str:
    """``mmap(0x200000001000, 0x2000, 0x3, 0x32, -1, 0)`` with window-relative hints."""
    args = []
    for value in call[1:]:
        if isinstance(value, bool):
            args.append(str(value))
        elif isinstance(value, int) and abs(value) > 0xFFFF:
            args.append(hex(value & ULONG) if value >= 0 else hex(value))
        else:
            args.append(hex(value) if isinstance(value, int) and value > 9 else str(value))
    return f"{call[0]}({', '.join(args)})"


def _fmt_line(line: Line | None) -> str:
    if line is None:
        return ""
    start, end, perms, offset, label = line
    return (f"+{(start - WINDOW_BASE) // PAGE_SIZE:>4}p-+{(end - WINDOW_BASE) // PAGE_SIZE:<4}p "
            f"{perms} {offset:>8x} {label}")


def _fmt_result(call: Sequence[Any], result: int | None) -> str:
    if result is None:
        return "(none)"
    if call[0] in ("mmap", "mremap") and result >= 0:
        return hex(result) + ("" if in_window(result) else " (outside the window)")
    return describe(result) if result <= 0 else errno_name(result)


def report(outcome: Outcome, seed: int | None = None) -> str:
    """A failure report a kernel engineer can act on: seed, calls, results, both maps."""
    lines = []
    if seed is not None:
        lines.append(f"seed {seed}")
    lines.append(f"window {WINDOW_BASE:#x} (maps below in pages relative to it)")
    if outcome.program.files:
        lines.append("files: " + ", ".join(
            f"file{i}(size={f.size:#x}, mode={f.mode})"
            for i, f in enumerate(outcome.program.files)))
    dropped = dict(outcome.model.dropped)
    kept_at = {index: step for step, index in enumerate(outcome.model.kept_index)}
    div = outcome.divergence
    lines.append("calls:")
    for index, call in enumerate(outcome.program.calls):
        if index in dropped:
            lines.append(f"  {index:>3}. {describe_call(call)}  [masked: {dropped[index]}]")
            continue
        step = kept_at[index]
        model_res = _fmt_result(call, outcome.model.results[step])
        host_res = (_fmt_result(call, outcome.host.results[step])
                    if step < len(outcome.host.results) else "(not run)")
        mark = "  <-- diverges" if div is not None and div.step == step else ""
        lines.append(f"  {index:>3}. {describe_call(call)} = host {host_res}, "
                     f"model {model_res}{mark}")
        if div is not None and step >= div.step:
            break
    if outcome.host_problem:
        lines.append(outcome.host_problem)
    if div is not None:
        lines.append(f"first difference: {div.what} after call "
                     f"{outcome.model.kept_index[div.step]}")
        width = 40
        lines.append(f"  {'host /proc/self/maps':<{width}} | model (4.6)")
        rows = max(len(div.host_maps), len(div.model_maps))
        for i in range(rows):
            host_line = div.host_maps[i] if i < len(div.host_maps) else None
            model_line = div.model_maps[i] if i < len(div.model_maps) else None
            flag = " " if host_line == model_line else "*"
            lines.append(f"{flag} {_fmt_line(host_line):<{width}} | {_fmt_line(model_line)}")
        lines.append("  window before the call (model): " + (
            "; ".join(_fmt_line(line).strip() for line in div.prev_maps) or "empty"))
    return "\n".join(lines)
