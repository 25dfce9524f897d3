"""PostgreSQL: the deliveries still to send, indexed in the order pushes take them

Revision ID: 0018
Revises: 0017

A push takes a tool's due deliveries oldest first, a few hundred at a time, and looks for a
fuller batch every quarter second (hub.sync.outbox). With statistics taken at a burst's start,
when most deliveries were queued, PostgreSQL judged a scan of the whole table and a sort the
cheapest way to them, long after they were sent: the table keeps every delivery ever made.
This partial index holds the open ones alone, in the order asked for, so the first rows are
read at once whatever the statistics say. SQLite plans from the query's own shape and keeps
ix_delivery_queue: no index is added there.
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_delivery_due", "delivery", ["connector", "next_attempt_at", "id"],
                        postgresql_where=sa.text("status IN ('queued', 'retrying')"))


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_delivery_due", table_name="delivery")
