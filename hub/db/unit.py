"""One transaction's work in progress: what its steps leave for later steps of the same
transaction, held in named fields and passed as an argument from step to step.

The drain makes one per batch; every other caller that plans deliveries or applies events
(replay, support actions, the sweep, the API, the consent fix) makes one per transaction.
The storage part (numbers taken ahead, objects not written yet) is used by hub.db.bulk;
the sync part (the identity index, dirty profiles, planned connectors) by hub.sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

# SQLAlchemy calls its flush and attribute listeners with the session or the object only:
# the unit is found through the session for them, and for nothing else.
_UNIT = "hub.db.unit"


@dataclass(eq=False)
class UnitOfWork:
    """The session of one transaction and what its steps left for the later ones."""

    session: Session
    # Storage (hub.db.bulk): table name -> the last number add_numbered took, and the objects
    # it added that no INSERT has written yet.
    numbered: dict[str, int] = field(default_factory=dict)
    unwritten: list = field(default_factory=list)
    # Sync: the identity index of the batch being drained (hub.sync.identity.Known), the ids
    # of subscribers whose profile must be planned, their objects (the session holds clean
    # objects only weakly), the connectors that got new deliveries, and the ids of people this
    # transaction created that no profile delivery names yet (none can: nothing to look up).
    people: object | None = None
    dirty: set[int] = field(default_factory=set)
    held: dict[int, object] = field(default_factory=dict)
    planned: set[str] = field(default_factory=set)
    unprofiled: set[int] = field(default_factory=set)

    def expose(self) -> None:
        """Let the session's flush and attribute listeners find this unit (unit_of): needed
        while it holds objects a flush must write first, or an index that changes must reach."""
        self.session.info[_UNIT] = self

    def clear(self) -> None:
        """Forget everything: what rolled-back work left for later steps is void."""
        self.numbered.clear()
        self.unwritten.clear()
        self.people = None
        self.dirty.clear()
        self.held.clear()
        self.planned.clear()
        self.unprofiled.clear()


def unit_of(session: Session) -> UnitOfWork | None:
    """The unit exposed on `session`, for SQLAlchemy's listeners; None when there is none."""
    return session.info.get(_UNIT)
