"""Stable customer links (`/l/<token>`) and their clicks

Revision ID: 0005
Revises: 0004

Triggers carry a hub URL whose random token names a `customer_link` row; the platform page
(a Stripe portal session, Shopify's account page) is made when the customer clicks, and the
click is kept in `link_click` for the subscriber's timeline. New tables only: nothing rewritten.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('customer_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('trigger_id', sa.Integer(), nullable=True),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=30), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=False),
    sa.Column('subscription_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_link')),
    sa.UniqueConstraint('token', name=op.f('uq_customer_link_token')),
    sa.UniqueConstraint('trigger_id', name=op.f('uq_customer_link_trigger_id'))
    )
    op.create_table('link_click',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('link_id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=30), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('page', sa.String(length=40), nullable=True),
    sa.Column('outcome', sa.String(length=12), nullable=False),
    sa.Column('clicked_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_click'))
    )
    op.create_index('ix_link_click_subscriber', 'link_click', ['subscriber_id', 'id'], unique=False)


def downgrade():
    op.drop_index('ix_link_click_subscriber', table_name='link_click')
    op.drop_table('link_click')
    op.drop_table('customer_link')
