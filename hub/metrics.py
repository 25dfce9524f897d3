"""Prometheus text for /metrics: inbox, deliveries and queues, read from the database."""
from __future__ import annotations

from sqlalchemy import bindparam, func, select

from hub.models import INTERRUPTED, Delivery, DeliveryAttempt, InboxEvent, Subscriber


def render(hub) -> str:
    """The metrics page, in Prometheus' text format."""
    lines = []
    with hub.storage.session() as session:
        lines += ["# HELP hub_inbox_open_events Inbox rows waiting or failed, by source and status.",
                  "# TYPE hub_inbox_open_events gauge"]
        # Only open rows: counting a million processed ones on every scrape is a full scan.
        for source, status, n in session.execute(select(InboxEvent.source, InboxEvent.status, func.count())
                                                 .where(InboxEvent.is_open())
                                                 .group_by(InboxEvent.source, InboxEvent.status)):
            lines.append(f'hub_inbox_open_events{{source="{source}",status="{status}"}} {n}')
        lines += ["# HELP hub_deliveries Deliveries by connector and status.", "# TYPE hub_deliveries gauge"]
        for connector, status, n in session.execute(select(Delivery.connector, Delivery.status, func.count())
                                                    .group_by(Delivery.connector, Delivery.status)):
            lines.append(f'hub_deliveries{{connector="{connector}",status="{status}"}} {n}')
        lines += ["# HELP hub_deliveries_interrupted_total Deliveries sent again because the push "
                  "carrying them stopped before the tool answered (a worker crash), by connector and "
                  "kind: events are dropped by tools that honour unique_id, profile updates are "
                  "written twice.",
                  "# TYPE hub_deliveries_interrupted_total counter"]
        for connector, kind, n in session.execute(interrupted_counts()):
            lines.append(f'hub_deliveries_interrupted_total{{connector="{connector}",kind="{kind}"}} {n}')
        lines += ["# HELP hub_subscribers Subscribers by lifecycle stage.", "# TYPE hub_subscribers gauge"]
        for stage, n in session.execute(select(Subscriber.stage, func.count()).group_by(Subscriber.stage)):
            lines.append(f'hub_subscribers{{stage="{stage or "unknown"}"}} {n}')
    try:
        depth = hub.queues.depth()
    except Exception:  # Redis down: /healthz says so; metrics still render
        depth = {}
    lines += ["# HELP hub_queue_depth Jobs waiting per RQ queue.", "# TYPE hub_queue_depth gauge"]
    lines += [f'hub_queue_depth{{queue="{q}"}} {n}' for q, n in depth.items()]
    return "\n".join(lines) + "\n"


def interrupted_counts():
    """(connector, kind, count) of interrupted pushes' attempts, read from their partial index
    (the outcome rendered as a literal: SQLite matches a partial index's condition by text)."""
    lost = DeliveryAttempt.outcome == bindparam(None, INTERRUPTED, literal_execute=True, unique=True)
    return (select(Delivery.connector, Delivery.kind, func.count())
            .select_from(DeliveryAttempt).join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(lost).group_by(Delivery.connector, Delivery.kind))
