# ruff: noqa: E501  (generated column lists, kept as Alembic wrote them)
"""initial schema: members, plates, points lots and entries, shops, purchases, rewards,
redemptions, coupons, staff, sessions, audit log (append-only by trigger), job runs.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 16:50:11.060096
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


# The audit log is append-only for everyone, pages and API included: the database refuses
# UPDATE and DELETE on it (TRUNCATE by the owner stays possible, for a restore).
PG_AUDIT = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""
SQLITE_AUDIT = [
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
]


def _audit_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_AUDIT)
    else:
        for stmt in SQLITE_AUDIT:
            op.execute(stmt)


def _drop_audit_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")


def upgrade() -> None:

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('job_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job', sa.String(length=32), nullable=False),
    sa.Column('run_key', sa.String(length=80), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs')),
    sa.UniqueConstraint('run_key', name=op.f('uq_job_runs_run_key'))
    )
    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_key_at', ['key', 'at'], unique=False)

    op.create_table('members',
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=True),
    sa.Column('blocked', sa.Boolean(), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_members')),
    sa.UniqueConstraint('phone', name=op.f('uq_members_phone'))
    )
    op.create_table('rewards',
    sa.Column('reward_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('hours', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('reward_id', name=op.f('pk_rewards'))
    )
    op.create_table('shops',
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('api_key_hash', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('shop_id', name=op.f('pk_shops')),
    sa.UniqueConstraint('api_key_hash', name=op.f('uq_shops_api_key_hash'))
    )
    op.create_table('staff_users',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_staff_users'))
    )
    op.create_table('web_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('subject_kind', sa.String(length=8), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_web_sessions'))
    )
    op.create_table('coupons',
    sa.Column('coupon_id', sa.String(length=160), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=32), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_coupons_member_id_members')),
    sa.PrimaryKeyConstraint('coupon_id', name=op.f('pk_coupons'))
    )
    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coupons_member_id'), ['member_id'], unique=False)

    op.create_table('one_time_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_one_time_codes_member_id_members')),
    sa.PrimaryKeyConstraint('code_hash', name=op.f('pk_one_time_codes'))
    )
    with op.batch_alter_table('one_time_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_one_time_codes_member_id'), ['member_id'], unique=False)

    op.create_table('plates',
    sa.Column('plate', sa.String(length=16), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_plates_member_id_members')),
    sa.PrimaryKeyConstraint('plate', name=op.f('pk_plates'))
    )
    with op.batch_alter_table('plates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plates_member_id'), ['member_id'], unique=False)

    op.create_table('points_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lot_id', sa.String(length=160), nullable=True),
    sa.Column('ref', sa.String(length=200), nullable=True),
    sa.Column('unique_key', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_points_entries_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_entries')),
    sa.UniqueConstraint('unique_key', name=op.f('uq_points_entries_unique_key'))
    )
    with op.batch_alter_table('points_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_entries_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_points_entries_member_id'), ['member_id'], unique=False)

    op.create_table('points_lots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lot_id', sa.String(length=160), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('remaining', sa.BigInteger(), nullable=False),
    sa.Column('earned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_points_lots_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_lots')),
    sa.UniqueConstraint('lot_id', name=op.f('uq_points_lots_lot_id'))
    )
    with op.batch_alter_table('points_lots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_lots_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_points_lots_member_id'), ['member_id'], unique=False)

    op.create_table('purchases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('brand', sa.String(length=64), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('rules_fired', sa.Text(), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('lot_id', sa.String(length=160), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_purchases_member_id_members')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.shop_id'], name=op.f('fk_purchases_shop_id_shops')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchases')),
    sa.UniqueConstraint('shop_id', 'idempotency_key', name='uq_purchases_shop_key')
    )
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_purchases_member_id'), ['member_id'], unique=False)

    op.create_table('redemptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('redemption_key', sa.String(length=128), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('reward_id', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('coupon_id', sa.String(length=160), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_redemptions_member_id_members')),
    sa.ForeignKeyConstraint(['reward_id'], ['rewards.reward_id'], name=op.f('fk_redemptions_reward_id_rewards')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemptions')),
    sa.UniqueConstraint('redemption_key', name=op.f('uq_redemptions_redemption_key'))
    )
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemptions_member_id'), ['member_id'], unique=False)
    _audit_triggers()


def downgrade() -> None:
    _drop_audit_triggers()

    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemptions_member_id'))

    op.drop_table('redemptions')
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_purchases_member_id'))

    op.drop_table('purchases')
    with op.batch_alter_table('points_lots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_lots_member_id'))
        batch_op.drop_index(batch_op.f('ix_points_lots_expires_at'))

    op.drop_table('points_lots')
    with op.batch_alter_table('points_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_entries_member_id'))
        batch_op.drop_index(batch_op.f('ix_points_entries_at'))

    op.drop_table('points_entries')
    with op.batch_alter_table('plates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plates_member_id'))

    op.drop_table('plates')
    with op.batch_alter_table('one_time_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_one_time_codes_member_id'))

    op.drop_table('one_time_codes')
    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coupons_member_id'))

    op.drop_table('coupons')
    op.drop_table('web_sessions')
    op.drop_table('staff_users')
    op.drop_table('shops')
    op.drop_table('rewards')
    op.drop_table('members')
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_key_at')

    op.drop_table('login_failures')
    op.drop_table('job_runs')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
