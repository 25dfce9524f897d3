"""One transaction's work in progress: what its steps leave for later steps of the same
transaction, held in named fields and passed as an argument from step to step.

The drain makes one per batch; every other caller that plans deliveries or applies events
(replay, support actions, the sweep, the API, the consent fix) makes one per transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session


@dataclass(eq=False)
class UnitOfWork:
    """The session of one transaction and what its steps left for the later ones."""

    session: Session
    # Sync: the ids of subscribers whose profile must be planned, their objects (the session
    # holds clean objects only weakly), and the connectors that got new deliveries.
    dirty: set[int] = field(default_factory=set)
    held: dict[int, object] = field(default_factory=dict)
    planned: set[str] = field(default_factory=set)

    def clear(self) -> None:
        """Forget everything: what rolled-back work left for later steps is void."""
        self.dirty.clear()
        self.held.clear()
        self.planned.clear()
