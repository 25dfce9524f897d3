"""Subscribers remember their Recharge customer id

Revision ID: 0007
Revises: 0006

`subscriber.recharge_customer_id` links a person to their Recharge customer, as
`chargebee_customer_id` does for Chargebee: once linked, the id wins over a changed email.
Unique like the other source ids. SQLite cannot add a UNIQUE column with ALTER TABLE, so the
batch form rebuilds the subscriber table there (one copy of the rows); PostgreSQL adds the
column and its index in place.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('subscriber') as batch_op:
        batch_op.add_column(sa.Column('recharge_customer_id', sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(op.f('uq_subscriber_recharge_customer_id'), ['recharge_customer_id'])


def downgrade():
    with op.batch_alter_table('subscriber') as batch_op:
        batch_op.drop_constraint(op.f('uq_subscriber_recharge_customer_id'), type_='unique')
        batch_op.drop_column('recharge_customer_id')
