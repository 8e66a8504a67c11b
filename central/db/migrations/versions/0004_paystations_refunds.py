"""pay station API keys; prepayment refunds; lanes disabled by staff (kept disabled when
an ingest worker starts).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('paystations',
    sa.Column('paystation_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('api_key_hash', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('paystation_id', name=op.f('pk_paystations')),
    sa.UniqueConstraint('api_key_hash', name=op.f('uq_paystations_api_key_hash'))
    )
    with op.batch_alter_table('prepayments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refunded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('refunded_by', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('refund_reason', sa.String(length=200), nullable=True))
    with op.batch_alter_table('lanes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_by', sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('lanes', schema=None) as batch_op:
        batch_op.drop_column('disabled_by')
    with op.batch_alter_table('prepayments', schema=None) as batch_op:
        batch_op.drop_column('refund_reason')
        batch_op.drop_column('refunded_by')
        batch_op.drop_column('refunded_at')
    op.drop_table('paystations')
