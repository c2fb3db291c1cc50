"""Failure pictures for the address space: a /proc/<pid>/maps-style listing and an ASCII
diagram of the pages around the range an operation touched."""

from __future__ import annotations

from specs.machine import PAGE_SHIFT, PAGE_SIZE
from specs.vma import VM_FLAG_NAMES, VM_SHARED, MmView, VmaView

#: pages drawn in the diagram
DIAGRAM_PAGES = 64


def maps_line(vma: VmaView) -> str:
    """``start-end perms pgoff file anon_vma flags``, as /proc/self/maps plus smaps VmFlags."""
    perms = "".join(c if vma.flags & bit else "-" for bit, c in ((1, "r"), (2, "w"), (4, "x")))
    perms += "s" if vma.flags & VM_SHARED else "p"
    names = " ".join(name for bit, name in VM_FLAG_NAMES if vma.flags & bit)
    file = "-" if vma.file is None else f"file#{vma.file}"
    anon = "-" if vma.anon_vma is None else f"av#{vma.anon_vma}"
    return (f"{vma.start:012x}-{vma.end:012x} {perms} {vma.pgoff << PAGE_SHIFT:08x} "
            f"{file:<8} {anon:<6} [{names}]")


def maps(view: MmView, limit: int = 40) -> str:
    """The whole address space, one VMA per line (elided in the middle beyond ``limit``)."""
    lines = [maps_line(v) for v in view.vmas]
    if len(lines) > limit:
        lines = [*lines[:limit // 2], f"... {len(lines) - limit} more ...", *lines[-limit // 2:]]
    counters = (f"map_count={view.map_count} total_vm={view.total_vm} data_vm={view.data_vm} "
                f"exec_vm={view.exec_vm} stack_vm={view.stack_vm} locked_vm={view.locked_vm} "
                f"committed={view.committed} brk={view.brk:#x}")
    return "\n".join([*lines, counters])


def diagram(view: MmView, addr: int, length: int = PAGE_SIZE) -> str:
    """One character per page around [addr, addr+length): ``.`` unmapped, then a letter per
    VMA (A, B, ...; upper case writable); ``^`` marks the operated range."""
    length = max(length, PAGE_SIZE)
    span = min(max(length >> PAGE_SHIFT, 1) + 16, DIAGRAM_PAGES)
    first = max((addr >> PAGE_SHIFT) - 8, 0)
    row, marks = [], []
    letters: dict[int, str] = {}
    for page in range(first, first + span):
        at = page << PAGE_SHIFT
        vma = view.find(at)
        if vma is None or vma.start > at:
            row.append(".")
        else:
            if vma.start not in letters:
                letters[vma.start] = chr(ord("a") + len(letters) % 26)
            letter = letters[vma.start]
            row.append(letter.upper() if vma.flags & 2 else letter)
        marks.append("^" if addr <= at < addr + length else " ")
    return (f"pages from {first << PAGE_SHIFT:#x}:\n  {''.join(row)}\n  {''.join(marks)}")
