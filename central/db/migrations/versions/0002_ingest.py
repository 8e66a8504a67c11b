# ruff: noqa: E501  (generated column lists, kept as Alembic wrote them)
"""ingest: the lanes' ledgers (lane_entries, lane_flagged), lanes and their status, the
downlink outbox, what was published to the lanes (member_published, rules_published).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 17:37:59.811585
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('downlink_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('retain', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_downlink_outbox'))
    )
    with op.batch_alter_table('downlink_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_downlink_outbox_pending', ['published_at', 'id'], unique=False)

    op.create_table('lane_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lane_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('entry_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('recorded', sa.String(length=40), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=True),
    sa.Column('member_id', sa.String(length=128), nullable=True),
    sa.Column('plate', sa.String(length=32), nullable=True),
    sa.Column('rules_version', sa.String(length=128), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lane_entries')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_lane_entries_entry_id')),
    sa.UniqueConstraint('lane_id', 'seq', name='uq_lane_entries_lane_seq')
    )
    with op.batch_alter_table('lane_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lane_entries_at'), ['at'], unique=False)
        batch_op.create_index('ix_lane_entries_member_at', ['member_id', 'at'], unique=False)

    op.create_table('lane_flagged',
    sa.Column('entry_id', sa.String(length=200), nullable=False),
    sa.Column('lane_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_lane_flagged'))
    )
    op.create_table('lane_status',
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('lane_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('backlog', sa.BigInteger(), nullable=False),
    sa.Column('last_acked_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stalled', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'lane_id', name=op.f('pk_lane_status'))
    )
    op.create_table('lanes',
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('lane_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'lane_id', name=op.f('pk_lanes'))
    )
    op.create_table('member_published',
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_member_published'))
    )
    op.create_table('rules_published',
    sa.Column('serial', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('serial', name=op.f('pk_rules_published'))
    )


def downgrade() -> None:
    op.drop_table('rules_published')
    op.drop_table('member_published')
    op.drop_table('lanes')
    op.drop_table('lane_status')
    op.drop_table('lane_flagged')
    with op.batch_alter_table('lane_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_lane_entries_member_at')
        batch_op.drop_index(batch_op.f('ix_lane_entries_at'))

    op.drop_table('lane_entries')
    with op.batch_alter_table('downlink_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_downlink_outbox_pending')

    op.drop_table('downlink_outbox')
