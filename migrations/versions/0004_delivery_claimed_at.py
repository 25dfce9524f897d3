"""Deliveries remember the push that holds them; interrupted attempts get an index

Revision ID: 0004
Revises: 0003

`delivery.claimed_at` is set when a push claims a delivery and cleared when the tool's answer
is recorded: a claim that finds it still set knows the previous push stopped mid-call
(hub.outbox). The partial index holds only the attempts of such pushes, which /metrics counts.
A plain ADD COLUMN (nullable): no table rebuild on SQLite, no rewrite on PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WHERE = sa.text("outcome = 'interrupted'")


def upgrade():
    op.add_column('delivery', sa.Column('claimed_at', hub.models.base.UTCDateTime(timezone=True),
                                        nullable=True))
    op.create_index('ix_delivery_attempt_interrupted', 'delivery_attempt', ['delivery_id'],
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade():
    op.drop_index('ix_delivery_attempt_interrupted', table_name='delivery_attempt')
    with op.batch_alter_table('delivery') as batch_op:
        batch_op.drop_column('claimed_at')
