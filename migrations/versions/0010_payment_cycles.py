"""Payments remember the store order they paid for

Revision ID: 0010
Revises: 0009

`payment.order_source_id` is the Shopify order a paid billing attempt or Recharge charge
made. A renewal reaches the hub twice, as the payment and as its order; the column lets
whichever comes second see that the money was counted. Indexed: every paid order looks it
up. A plain nullable column, added in place on both SQLite and PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('payment', sa.Column('order_source_id', sa.String(length=255), nullable=True))
    op.create_index(op.f('ix_payment_order_source_id'), 'payment', ['order_source_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_payment_order_source_id'), table_name='payment')
    op.drop_column('payment', 'order_source_id')
