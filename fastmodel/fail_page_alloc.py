"""fail_page_alloc for fastmodel's composed kernel [4.6: mm/page_alloc.c
should_fail_alloc_page; lib/fault-inject.c should_fail].

The kernel puts this shim between itself (and every part that allocates) and the page
allocator, so a test can make the n-th allocation of a fork or a fault fail.  It keeps two
plain ints instead of an attrs record and checks them inline: the shim sits on every
allocation of a 64 MiB fork, so it should cost one comparison when disarmed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from specs import gfp
from specs.buddy import BuddyView, PageAllocator, PageInfo, PageState
from specs.errno import Errno

EINVAL: Final = -Errno.EINVAL
#: module-level copy: ``__GFP_NOFAIL`` written inside a class body would be name-mangled
NOFAIL: Final = gfp.__GFP_NOFAIL


class FailPageAlloc:
    """Forwards to ``inner`` unless armed.  [Simplified: probability 100, interval 1, no task
    or stack filter, min-order 0, and neither ignore-gfp-highmem nor ignore-gfp-wait (the
    debugfs defaults would spare user pages): once armed, every allocation past the
    ``space`` budget fails until ``times`` runs out.]"""

    def __init__(self, inner: PageAllocator) -> None:
        self.inner = inner
        self.config = inner.config
        self.capabilities = inner.capabilities
        #: [4.6: fault_attr.times] failures left; -1 never runs out; 0 is disarmed
        self.times = 0
        #: [4.6: fault_attr.space] pages that still pass before the first failure
        self.space = 0
        #: ``on_exhausted(gfp_mask, order)`` runs when the allocator itself failed (never
        #: for an injected failure): the composed kernel's OOM killer
        self.on_exhausted: Callable[[int, int], None] | None = None

    def arm(self, times: int, space: int = 0) -> int:
        """0, or -EINVAL for ``times`` < -1 or ``space`` < 0.  [Simplified: the model's own
        argument check; 4.6's debugfs takes any integer.]"""
        if times < -1 or space < 0:
            return EINVAL
        self.times, self.space = times, space
        return 0

    def should_fail(self, gfp_mask: int, order: int) -> bool:
        """[4.6: lib/fault-inject.c should_fail] a __GFP_NOFAIL request always passes; the
        space budget is spent before anything fails; a positive ``times`` counts down."""
        if not self.times or gfp_mask & NOFAIL:
            return False
        pages = 1 << order
        if self.space > pages:
            self.space -= pages
            return False
        if self.times > 0:
            self.times -= 1
        return True

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        # [4.6: mm/page_alloc.c __alloc_pages_nodemask] the injection point comes before
        # the zonelist walk: an injected failure neither reclaims nor OOM-kills
        if self.times and order >= 0 and self.should_fail(gfp_mask, order):
            return None
        pfn = self.inner.alloc_pages(gfp_mask, order, cpu)
        if pfn is None and order >= 0 and self.on_exhausted is not None:
            # [4.6: mm/page_alloc.c __alloc_pages_slowpath, __alloc_pages_may_oom] the last
            # resort once reclaim has made no progress
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
