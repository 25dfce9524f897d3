"""The sync pipeline, in the order an event travels: inbox, identity, apply, rules, triggers, outbox, compliance."""
