"""Paused subscriptions remember when they resume

Revision ID: 0006
Revises: 0005

`subscription.resumes_at` is the date a paused subscription collects payment again, when the
platform names one (Stripe's `pause_collection.resumes_at`); it is shown on the subscriber page
and in the API. A plain ADD COLUMN (nullable): no table rebuild on SQLite, no rewrite on PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('subscription', sa.Column('resumes_at', hub.models.base.UTCDateTime(timezone=True),
                                            nullable=True))


def downgrade():
    with op.batch_alter_table('subscription') as batch_op:
        batch_op.drop_column('resumes_at')
