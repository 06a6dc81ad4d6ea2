"""How far a caller sees (shared/kernel/reach.py), pure."""

from __future__ import annotations

from shared.kernel.reach import EVERYWHERE, Reach


def test_a_list_reaches_only_the_callers_region() -> None:
    """Every list (tickets, network, work lists, compliance, the console) filters by one
    rule: a regional caller's own region, and nothing for another region it asks for."""
    assert EVERYWHERE.list_region(None) == (None, True)
    assert EVERYWHERE.list_region("east") == ("east", True)
    east = Reach(region="east")
    assert east.list_region(None) == ("east", True)
    assert east.list_region("east") == ("east", True)
    assert east.list_region("west") == ("east", False)
