"""Subscriptions that expire after a number of charges

Revision ID: 0012
Revises: 0011

`subscription.charges_limit` is Recharge's expire_after_specific_number_of_charges: the
subscription ends after that many charges, and Renew Now aims at the last one. A plain
nullable column, added in place on both SQLite and PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('subscription', sa.Column('charges_limit', sa.Integer(), nullable=True))


def downgrade():
    op.drop_column('subscription', 'charges_limit')
