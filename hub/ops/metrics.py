"""Prometheus text for /metrics: inbox, deliveries, owed profiles and queues, read from the database.

A custom prometheus_client collector: the numbers are counted in the database (and Redis) at
each scrape, not kept in this process, so every web process answers the same.
"""
from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import bindparam, func, select

from hub.models import INTERRUPTED, Delivery, DeliveryAttempt, InboxEvent, Subscriber
from hub.ops.dashboard import refused_webhooks
from hub.ops.synclog import owed_profile_counts, unanswered_retry_counts
from hub.sync import retries

# The text format every Prometheus reads (what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubCollector:
    """The hub's metrics, read when collected."""

    def __init__(self, hub):
        self.hub = hub

    def collect(self):
        with self.hub.storage.session() as session:
            # Only open rows, through their index: counting a million processed ones on every
            # scrape is a full scan.
            open_rows = InboxEvent.open_in_index_order(InboxEvent.source, InboxEvent.status)
            yield _family(GaugeMetricFamily, "hub_inbox_open_events",
                          "Inbox rows waiting or failed, by source and status.", ["source", "status"],
                          session.execute(select(open_rows.c.source, open_rows.c.status, func.count())
                                          .group_by(open_rows.c.source, open_rows.c.status)))
            waiting = InboxEvent.open_in_index_order(InboxEvent.source, where=(InboxEvent.is_waiting(),))
            yield _family(GaugeMetricFamily, "hub_inbox_waiting_events",
                          "Failed inbox rows whose platform did not answer what they need from it, which the "
                          "hub tries again by itself (hub.sync.inbox), by source.", ["source"],
                          session.execute(select(waiting.c.source, func.count()).group_by(waiting.c.source)))
            yield _family(GaugeMetricFamily, "hub_deliveries", "Deliveries by connector and status.",
                          ["connector", "status"],
                          session.execute(select(Delivery.connector, Delivery.status, func.count())
                                          .group_by(Delivery.connector, Delivery.status)))
            yield _family(GaugeMetricFamily, "hub_profiles_owed",
                          "Profile updates a slower tool is owed (planned as its rate limit has room, or "
                          "once it is switched on again), by connector.", ["connector"],
                          sorted(owed_profile_counts(session).items()))
            yield _family(CounterMetricFamily, "hub_deliveries_interrupted_total",
                          "Deliveries sent again because the push carrying them stopped before the tool "
                          "answered (a worker crash), by connector and kind: events are dropped by tools that "
                          "honour unique_id, profile updates are written twice.", ["connector", "kind"],
                          session.execute(interrupted_counts()))
            yield _family(GaugeMetricFamily, "hub_payment_retries_unanswered",
                          "Orchestrated payment retries asked of a platform that gave no answer yet, to be "
                          "asked again (hub.sync.retries), by source.", ["source"],
                          sorted(unanswered_retry_counts(session).items()))
            yield _family(GaugeMetricFamily, "hub_payment_retries_platform_scheduled",
                          "Open failed payments the platform announced a retry of its own for while the hub "
                          "orchestrates retries (dunning mode orchestrate): cards tried on two schedules, "
                          "by source.", ["source"],
                          sorted((source, found["count"]) for source, found
                                 in retries.own_schedules(session, self.hub.settings).items()))
            yield _family(GaugeMetricFamily, "hub_subscribers", "Subscribers by lifecycle stage.", ["stage"],
                          ((stage or "unknown", n) for stage, n in session.execute(
                              select(Subscriber.stage, func.count()).group_by(Subscriber.stage))))
        try:
            depth = self.hub.queues.depth()
        except Exception:  # Redis down: /healthz says so; metrics still render
            depth = {}
        yield _family(GaugeMetricFamily, "hub_queue_depth", "Jobs waiting per RQ queue.", ["queue"], depth.items())
        yield _family(GaugeMetricFamily, "hub_webhooks_refused_24h",
                      "Webhooks refused (401) for a signature that does not match the source's secret, in "
                      "the last 24 hours, by source.", ["source"],
                      ((held["source"], held["count"]) for held in refused_webhooks(self.hub.queues)))


def _family(kind, name: str, documentation: str, labels: list[str], rows):
    """A metric family of `kind` with one sample per row: (label values…, value)."""
    family = kind(name, documentation, labels=labels)
    for *values, n in rows:
        family.add_metric(list(values), n)
    return family


def render(hub) -> str:
    """The metrics page, in Prometheus' text format."""
    return generate_latest(HubCollector(hub)).decode()


def interrupted_counts():
    """(connector, kind, count) of interrupted pushes' attempts, read from their partial index
    (the outcome rendered as a literal: SQLite matches a partial index's condition by text)."""
    lost = DeliveryAttempt.outcome == bindparam(None, INTERRUPTED, literal_execute=True, unique=True)
    return (select(Delivery.connector, Delivery.kind, func.count())
            .select_from(DeliveryAttempt).join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(lost).group_by(Delivery.connector, Delivery.kind))
