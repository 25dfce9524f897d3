"""A renewal remembers what the platform said it will charge

Revision ID: 0016
Revises: 0015

A notice of the next renewal (Stripe's invoice.upcoming, Recharge's queued charge, Chargebee's
renewal reminder) names what it will charge, which a change scheduled for the renewal (a new
price phase, a discount ending) makes differ from the subscription's price: the reminders name
it. `subscription.renewal_amount` is that amount, `renewal_amount_at` the renewal it is for.
Plain ADD COLUMNs (nullable): no table rebuild on SQLite, no rewrite on PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('subscription', sa.Column('renewal_amount', sa.BigInteger(), nullable=True))
    op.add_column('subscription', sa.Column('renewal_amount_at', hub.models.base.UTCDateTime(timezone=True),
                                            nullable=True))


def downgrade():
    with op.batch_alter_table('subscription') as batch_op:
        batch_op.drop_column('renewal_amount_at')
        batch_op.drop_column('renewal_amount')
