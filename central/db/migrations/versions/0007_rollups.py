"""figure rollups (figures_daily, member_days, member_months, rollup_marks, visit_groups,
visit_group_periods), the expiring lots' covering index, and the member
search's trigram indexes (pg_trgm on PostgreSQL: ``CREATE EXTENSION IF NOT EXISTS pg_trgm``,
a trusted extension the database owner may create; plain indexes on SQLite).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TRGM = (("ix_members_name_trgm", "members", "name"),
        ("ix_members_phone_trgm", "members", "phone"),
        ("ix_plates_plate_trgm", "plates", "plate"))


def upgrade() -> None:
    op.create_table('figures_daily',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('value_cents', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'kind', 'key', name=op.f('pk_figures_daily'))
    )
    op.create_table('member_days',
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('earned', sa.BigInteger(), nullable=False),
    sa.Column('visits', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('member_id', 'day', name=op.f('pk_member_days'))
    )
    op.create_table('member_months',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('earned', sa.BigInteger(), nullable=False),
    sa.Column('visit_days', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('month', 'member_id', name=op.f('pk_member_months'))
    )
    op.create_table('rollup_marks',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('tz', sa.String(length=64), nullable=False),
    sa.Column('entries_id', sa.BigInteger(), nullable=False),
    sa.Column('purchases_id', sa.BigInteger(), nullable=False),
    sa.Column('redemptions_id', sa.BigInteger(), nullable=False),
    sa.Column('folded_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rollup_marks'))
    )
    op.create_table('visit_groups',
    sa.Column('first', sa.String(length=7), nullable=False),
    sa.Column('last', sa.String(length=7), nullable=False),
    sa.Column('bucket', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('members', sa.BigInteger(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('first', 'last', 'bucket', name=op.f('pk_visit_groups'))
    )
    op.create_table('visit_group_periods',
    sa.Column('first', sa.String(length=7), nullable=False),
    sa.Column('last', sa.String(length=7), nullable=False),
    sa.Column('built_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('first', 'last', name=op.f('pk_visit_group_periods'))
    )
    op.create_index('ix_points_lots_expiring', 'points_lots', ['expires_at'], unique=False,
                    postgresql_include=['remaining'], postgresql_where=sa.text('remaining > 0'),
                    sqlite_where=sa.text('remaining > 0'))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, table, col in TRGM:
            op.execute(f"CREATE INDEX {name} ON {table} USING gin ({col} gin_trgm_ops)")
    else:
        for name, table, col in TRGM:
            op.create_index(name, table, [col], unique=False)


def downgrade() -> None:
    for name, table, _col in TRGM:
        op.drop_index(name, table_name=table)
    op.drop_index('ix_points_lots_expiring', table_name='points_lots')
    op.drop_table('visit_group_periods')
    op.drop_table('visit_groups')
    op.drop_table('rollup_marks')
    op.drop_table('member_months')
    op.drop_table('member_days')
    op.drop_table('figures_daily')
