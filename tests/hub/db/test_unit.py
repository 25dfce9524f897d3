"""A transaction's work in progress passes between modules as a UnitOfWork argument."""
from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]


def test_no_module_but_the_unit_of_work_keeps_state_in_session_info():
    # Session.info read or written anywhere else is a channel between modules that no
    # signature shows: state a later step needs goes on the unit, passed as an argument.
    # (A pooled connection's own info, which hub.db.turns keeps for the pool's reset, is not.)
    users = sorted(str(path.relative_to(PROJECT)) for package in ("hub", "webhooks", "connectors")
                   for path in (PROJECT / package).rglob("*.py")
                   if re.search(r"session\.info\s*[\[.]", path.read_text()))
    assert users == ["hub/db/unit.py"]

