"""Refunds are kept per order and source, so one refund reported twice subtracts once

Revision ID: 0011
Revises: 0010

`order_refunds` holds, per refunded order, what each source says it gave back (a running
total, or its single refunds by key) and how much of the largest the hub has taken off
lifetime spend. Recharge's charge/refunded and Shopify's refunds/create report one partial
refund of one Shopify order; a replay reports it again. A new table: nothing to copy.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('order_refunds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_source_id', sa.String(length=255), nullable=False),
    sa.Column('reported', sa.JSON(), nullable=False),
    sa.Column('counted', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_refunds')),
    sa.UniqueConstraint('order_source_id', name=op.f('uq_order_refunds_order_source_id'))
    )


def downgrade():
    op.drop_table('order_refunds')
