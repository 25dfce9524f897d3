"""Orders found by their store id alone

Revision ID: 0015
Revises: 0014

A subscription app's order (Recharge) and the store's own webhook name the same store order
id: the hub finds the order by that id whichever source told of it first, as refunds already
did. An index on shop_order.source_id makes that a lookup, not a scan; no row is rewritten.
"""
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_shop_order_source_id', 'shop_order', ['source_id'], unique=False)


def downgrade():
    op.drop_index('ix_shop_order_source_id', table_name='shop_order')
