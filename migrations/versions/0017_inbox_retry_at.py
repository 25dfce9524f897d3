"""A webhook whose platform did not answer tries again by itself

Revision ID: 0017
Revises: 0016

Some webhooks name ids only, and the worker asks the platform's API for the rest before
normalizing (a Stripe dispute's charge, a Shopify contract). When that API does not answer
(unreachable, 429, 5xx), the row is marked failed with `retry_at`, the time the worker's
one-minute backstop opens it again (hub.sync.inbox.reopen_waiting). A plain nullable ADD
COLUMN: no table rebuild on SQLite (the table lives in the inbox's own file there, which
SQLite finds by its unqualified name), no rewrite on PostgreSQL.
"""
import sqlalchemy as sa
from alembic import op

import hub.models.base

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('inbox_event', sa.Column('retry_at', hub.models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('inbox_event') as batch_op:
        batch_op.drop_column('retry_at')
