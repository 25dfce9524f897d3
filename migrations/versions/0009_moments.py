"""Subscriptions set to end at period end are found by their end date

Revision ID: 0009
Revises: 0008

Renew Now's sweep asks, each day, for the subscriptions set to end at period end whose
period ends a given number of days ahead: an index on (cancel_at_period_end,
current_period_end) makes that a range search instead of a scan of every subscription.
"""
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_subscription_ending', 'subscription', ['cancel_at_period_end', 'current_period_end'])


def downgrade():
    op.drop_index('ix_subscription_ending', table_name='subscription')
