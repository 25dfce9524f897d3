"""The last consent drift report

Revision ID: 0008
Revises: 0007

`consent_drift` holds the people whose marketing consent in Klaviyo, HubSpot or ActiveCampaign
differs from the source of truth, as `hub consent check` (and its daily job) last found them;
each run replaces the rows. A new table: nothing existing is rewritten.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'consent_drift',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('connector', sa.String(length=30), nullable=False),
        sa.Column('channel', sa.String(length=10), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('source', sa.String(length=30), nullable=True),
        sa.Column('source_state', sa.String(length=20), nullable=False),
        sa.Column('source_at', hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('tool_state', sa.String(length=20), nullable=False),
        sa.Column('tool_since', hub.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('tool_newer', sa.Boolean(), nullable=False),
        sa.Column('fix_delivery_id', sa.Integer(), nullable=True),
        sa.Column('found_at', hub.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_drift')),
    )
    op.create_index('ix_consent_drift_kind', 'consent_drift', ['kind', 'subscriber_id'], unique=False)
    op.create_index(op.f('ix_consent_drift_subscriber_id'), 'consent_drift', ['subscriber_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_consent_drift_subscriber_id'), table_name='consent_drift')
    op.drop_index('ix_consent_drift_kind', table_name='consent_drift')
    op.drop_table('consent_drift')
