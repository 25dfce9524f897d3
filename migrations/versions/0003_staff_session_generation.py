"""Staff sessions end at logout and password change: staff_user.session_generation

Revision ID: 0003
Revises: 0002

The session cookie carries the generation it was issued under; logout and a new password
move the user's generation on, so every cookie issued before stops working.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('staff_user', sa.Column('session_generation', sa.Integer(), nullable=False,
                                          server_default='0'))


def downgrade():
    with op.batch_alter_table('staff_user') as batch:
        batch.drop_column('session_generation')
