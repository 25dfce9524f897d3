"""Outbox (placeholder until the connectors land)."""


def plan(session, settings, subscriber, changes, triggers, event, history=False):
    return None


def flush_pending_profiles(session, settings):
    return None
