"""Rule layer (placeholder until the rule families land)."""


def on_event(session, subscriber, event, changes, now, inbox_event_id=None, history=False):
    return []


def sweep(session, settings, now):
    return {}
