"""The fast model: the reference model's behaviour over compact numpy-backed state.

``fastmodel.buddy.FastBuddy`` is observably identical to ``refmodel.buddy.RefBuddy`` (same
pfns, results, views and page state after every call) but stores struct page in a few bytes of
numpy arrays instead of a Python object per page, so machines of millions of pages boot in
milliseconds and fit in a tenth of the memory.  It imports only ``specs``, attrs, numpy and the
standard library, never the reference model, so the two stay independent witnesses of 4.6.
"""

from fastmodel.buddy import FastBuddy

__all__ = ["FastBuddy"]
