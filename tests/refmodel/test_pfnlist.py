"""PfnList behaves like the kernel's struct list_head (include/linux/list.h)."""

from __future__ import annotations

import pytest

from refmodel.pfnlist import PfnList


def make(*pfns: int) -> PfnList:
    """A list built by list_add_tail of each pfn in turn."""
    lst = PfnList()
    for pfn in pfns:
        lst.add_tail(pfn)
    return lst


def snapshot(lst: PfnList) -> tuple:
    """(entries head first, len, bool, first, last)."""
    return tuple(lst), len(lst), bool(lst), lst.first(), lst.last()


def test_empty_list():
    """A new list is empty and has no first or last entry."""
    assert ((), 0, False, None, None) == snapshot(PfnList())


def test_add_head_prepends():
    """list_add puts each new entry in front of the previous ones."""
    lst = PfnList()
    for pfn in (1, 2, 3):
        lst.add_head(pfn)
    assert ((3, 2, 1), 3, True, 3, 1) == snapshot(lst)


def test_add_tail_appends():
    """list_add_tail puts each new entry behind the previous ones."""
    assert ((1, 2, 3), 3, True, 1, 3) == snapshot(make(1, 2, 3))


def test_mixed_head_and_tail():
    """Head and tail insertions interleave as on a list_head."""
    lst = make(10)
    lst.add_head(5)
    lst.add_tail(20)
    lst.add_head(0)
    assert ((0, 5, 10, 20), 4, True, 0, 20) == snapshot(lst)


@pytest.mark.parametrize(("victim", "expected"), [
    (1, ((2, 3), 2, True, 2, 3)),
    (2, ((1, 3), 2, True, 1, 3)),
    (3, ((1, 2), 2, True, 1, 2)),
])
def test_remove_relinks_neighbours(victim, expected):
    """list_del of the head, a middle or the tail entry joins its neighbours."""
    lst = make(1, 2, 3)
    lst.remove(victim)
    assert expected == snapshot(lst)


def test_remove_last_entry_empties_list():
    """Removing the only entry leaves an empty list."""
    lst = make(7)
    lst.remove(7)
    assert ((), 0, False, None, None) == snapshot(lst)


def test_readd_after_remove():
    """A removed pfn can be added again, at its new position."""
    lst = make(1, 2, 3)
    lst.remove(1)
    lst.add_tail(1)
    assert ((2, 3, 1), 3, True, 2, 1) == snapshot(lst)


def test_pfn_zero_is_an_ordinary_entry():
    """Pfn 0 is a valid entry, distinct from the sentinel."""
    lst = make(0)
    assert ((0,), 1, True, 0, 0, True) == (*snapshot(lst), 0 in lst)


def test_contains():
    """Membership is true exactly for the pfns on the list, never for the sentinel."""
    lst = make(4, 8)
    assert (True, True, False, False, False) == (4 in lst, 8 in lst, 5 in lst, -1 in lst,
                                                 "4" in lst)


def test_iteration_is_repeatable():
    """Iterating twice yields the same order."""
    lst = make(3, 1, 2)
    assert ([3, 1, 2], [3, 1, 2]) == (list(lst), list(lst))


def test_invalid_double_add_head():
    """Adding a pfn already on the list raises ValueError and leaves the list unchanged."""
    lst = make(1, 2)
    with pytest.raises(ValueError, match="already on this list"):
        lst.add_head(2)
    assert ((1, 2), 2, True, 1, 2) == snapshot(lst)


def test_invalid_double_add_tail():
    """Adding a pfn already on the list at the tail raises ValueError and changes nothing."""
    lst = make(1, 2)
    with pytest.raises(ValueError, match="already on this list"):
        lst.add_tail(1)
    assert ((1, 2), 2, True, 1, 2) == snapshot(lst)


def test_invalid_remove_absent():
    """Removing a pfn that is not on the list raises KeyError and changes nothing."""
    lst = make(1, 2)
    with pytest.raises(KeyError):
        lst.remove(3)
    assert ((1, 2), 2, True, 1, 2) == snapshot(lst)


def test_lists_are_independent():
    """Two lists never share entries or links."""
    a, b = make(1, 2), make(2, 3)
    a.remove(2)
    assert (((1,), 1, True, 1, 1), ((2, 3), 2, True, 2, 3)) == (snapshot(a), snapshot(b))


def test_invalid_remove_sentinel():
    """Removing the sentinel value -1, which is never on the list, raises KeyError and changes
    nothing."""
    lst = make(1, 2)
    try:
        lst.remove(-1)
        raised = False
    except KeyError:
        raised = True
    try:
        after = snapshot(lst)
    except KeyError:
        after = "corrupted: the sentinel's links are gone"
    assert (True, ((1, 2), 2, True, 1, 2)) == (raised, after)
