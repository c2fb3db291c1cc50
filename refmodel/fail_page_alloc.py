"""Page-allocation fault injection for the composed kernel [4.6: mm/page_alloc.c
should_fail_alloc_page; lib/fault-inject.c should_fail; Documentation/fault-injection/].

The kernel wraps its page allocator in :class:`FailPageAlloc`, so every allocation a fault,
fork or table needs can be made to fail at a chosen moment, the way a tester arms
``/sys/kernel/debug/fail_page_alloc``.  Failing at an exact point (the third table of a
fork, the data page after its PTE table) is what makes "fails the way 4.6 does and leaks
nothing" testable without filling memory first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from specs import gfp
from specs.buddy import BuddyView, PageAllocator, PageInfo, PageState
from specs.errno import Errno

EINVAL: Final = -Errno.EINVAL
#: bound outside the class: a ``__`` name inside one would be name-mangled
GFP_NOFAIL: Final = gfp.__GFP_NOFAIL


@attrs.define
class FailAttr:
    """The fault_attr knobs the model keeps.  [Simplified: probability 100, interval 1,
    min-order 0, no task filter and no stack filter, and ignore-gfp-highmem /
    ignore-gfp-wait both off (4.6's debugfs defaults are on, which would spare every user
    page): an armed attribute fails every allocation it sees once ``space`` is used up.]"""

    #: failures still to inject; -1: without limit [4.6: fault_attr.times]
    times: int = 0
    #: a budget of pages (1 << order per call): a call smaller than what is left succeeds
    #: and spends it; the first that is not smaller fails [4.6: fault_attr.space]
    space: int = 0


class FailPageAlloc:
    """A page allocator that fails on command and otherwise forwards to ``inner``."""

    def __init__(self, inner: PageAllocator) -> None:
        self.inner = inner
        self.config = inner.config
        self.capabilities = inner.capabilities
        self.attr = FailAttr()
        #: called as ``on_exhausted(gfp_mask, order)`` when the allocator itself failed (not
        #: an injected failure): the composed kernel runs the OOM killer there
        self.on_exhausted: Callable[[int, int], None] | None = None

    def arm(self, times: int, space: int = 0) -> int:
        """Fail the next ``times`` allocations (-1: all) once ``space`` is spent;
        ``arm(0)`` disarms.  -EINVAL for a negative space or times below -1, as the
        debugfs files refuse what they cannot parse [Simplified: 4.6's debugfs accepts any
        integer; these two are the model's own argument checks]."""
        if times < -1 or space < 0:
            return EINVAL
        self.attr = FailAttr(times=times, space=space)
        return 0

    def should_fail(self, gfp_mask: int, order: int) -> bool:
        """[4.6: mm/page_alloc.c should_fail_alloc_page, lib/fault-inject.c should_fail]:
        never for __GFP_NOFAIL; ``space`` is consumed before any failure; ``times``
        counts down to zero (and -1 never does)."""
        if gfp_mask & GFP_NOFAIL or self.attr.times == 0:
            return False
        size = 1 << order
        if self.attr.space > size:
            self.attr.space -= size
            return False
        if self.attr.times != -1:
            self.attr.times -= 1
        return True

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        # [4.6: mm/page_alloc.c __alloc_pages_nodemask] checked before any zone is tried,
        # so an injected failure neither reclaims nor calls the OOM killer
        if 0 <= order and self.should_fail(gfp_mask, order):
            return None
        pfn = self.inner.alloc_pages(gfp_mask, order, cpu)
        if pfn is None and 0 <= order and self.on_exhausted is not None:
            # [4.6: mm/page_alloc.c __alloc_pages_slowpath, __alloc_pages_may_oom] the slow
            # path's last resort once reclaim made no progress
            self.on_exhausted(gfp_mask, order)
        return pfn

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        return self.inner.free_pages(pfn, order, cpu)

    def get_page(self, pfn: int) -> int:
        return self.inner.get_page(pfn)

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        return self.inner.put_page(pfn, cpu)

    def split_page(self, pfn: int, order: int) -> int:
        return self.inner.split_page(pfn, order)

    def drain_pages(self, cpu: int) -> int:
        return self.inner.drain_pages(cpu)

    def view(self) -> BuddyView:
        return self.inner.view()

    def page_state(self) -> PageState:
        return self.inner.page_state()

    def page(self, pfn: int) -> PageInfo | None:
        return self.inner.page(pfn)
