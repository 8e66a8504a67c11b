# ruff: noqa: E501  (column lists as Alembic writes them)
"""prepayments: stays paid at central before the car leaves (pay station, member portal),
sent to the lanes as signed prepaid messages through downlink_outbox.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prepayments',
    sa.Column('payment_id', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('plate', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entry_event_id', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=80), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_prepayments_member_id_members')),
    sa.PrimaryKeyConstraint('payment_id', name=op.f('pk_prepayments'))
    )
    with op.batch_alter_table('prepayments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prepayments_plate'), ['plate'], unique=False)
        batch_op.create_index(batch_op.f('ix_prepayments_member_id'), ['member_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prepayments_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('prepayments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prepayments_expires_at'))
        batch_op.drop_index(batch_op.f('ix_prepayments_member_id'))
        batch_op.drop_index(batch_op.f('ix_prepayments_plate'))

    op.drop_table('prepayments')
