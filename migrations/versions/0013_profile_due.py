"""Profiles owed to the slower tools

Revision ID: 0013
Revises: 0012

`profile_due` holds the people whose profile a slower tool (HubSpot, ActiveCampaign) is owed:
the drain marks them, the tool's push plans their delivery when its rate limit has room. A
new table: nothing existing is rewritten.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'profile_due',
        sa.Column('connector', sa.String(length=30), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('marked_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('connector', 'subscriber_id', name=op.f('pk_profile_due')),
    )
    op.create_index('ix_profile_due_order', 'profile_due', ['connector', 'marked_at'], unique=False)


def downgrade():
    op.drop_index('ix_profile_due_order', table_name='profile_due')
    op.drop_table('profile_due')
