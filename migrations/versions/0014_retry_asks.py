"""Orchestrated retries still to be asked of the platform

Revision ID: 0014
Revises: 0013

`retry_ask` holds each orchestrated retry (dunning mode `orchestrate`) from the transaction
that fires its trigger until the platform answers, so a worker killed before the call, or a
platform that did not answer, leaves it to be asked again. A new table: nothing existing is
rewritten.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'retry_ask',
        sa.Column('trigger_id', sa.Integer(), nullable=False),
        sa.Column('payment_id', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('due_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('tries', sa.Integer(), nullable=False),
        sa.Column('created_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('trigger_id', name=op.f('pk_retry_ask')),
    )
    op.create_index('ix_retry_ask_due', 'retry_ask', ['due_at'], unique=False)


def downgrade():
    op.drop_index('ix_retry_ask_due', table_name='retry_ask')
    op.drop_table('retry_ask')
