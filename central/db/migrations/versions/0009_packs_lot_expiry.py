"""Two rollups for the overview.

Month packs for its visit groups (``member_slots``, ``month_packs``, built from
``member_months``), and ``member_months`` by member (the fold's members' months).
Points outstanding by expiry hour (``lot_expiry_hours``), kept by triggers on
``points_lots`` in the same transaction as every change of a lot, and filled from the lots
already there: the points expiring in 30/60/90 days no longer scan the lots. Members and
their positive balances (``member_totals``), kept the same way by triggers on ``members``.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# a lot's contribution: its remaining points at its expiry hour, if any remain
PG_HOUR = "floor(extract(epoch from {t}.expires_at) / 3600)::bigint"
PG_LIVE = "{t}.remaining > 0 AND {t}.expires_at IS NOT NULL"
PG_FUNCTIONS = {
    "lot_expiry_ins": f"""
        INSERT INTO lot_expiry_hours (hour, points)
        SELECT {PG_HOUR.format(t='n')}, sum(n.remaining) FROM new_lots n
        WHERE {PG_LIVE.format(t='n')} GROUP BY 1""",
    "lot_expiry_del": f"""
        INSERT INTO lot_expiry_hours (hour, points)
        SELECT {PG_HOUR.format(t='o')}, -sum(o.remaining) FROM old_lots o
        WHERE {PG_LIVE.format(t='o')} GROUP BY 1""",
    "lot_expiry_upd": f"""
        INSERT INTO lot_expiry_hours (hour, points)
        SELECT h, sum(p) FROM (
          SELECT {PG_HOUR.format(t='n')} AS h, n.remaining AS p FROM new_lots n
          WHERE {PG_LIVE.format(t='n')}
          UNION ALL
          SELECT {PG_HOUR.format(t='o')}, -o.remaining FROM old_lots o
          WHERE {PG_LIVE.format(t='o')}) d
        GROUP BY h HAVING sum(p) <> 0""",
}
PG_TRIGGERS = (("lot_expiry_ins", "INSERT", "NEW TABLE AS new_lots"),
               ("lot_expiry_del", "DELETE", "OLD TABLE AS old_lots"),
               ("lot_expiry_upd", "UPDATE", "OLD TABLE AS old_lots NEW TABLE AS new_lots"))

# the whole seconds only: SQLite's date functions round to the millisecond (23:59:59.999999
# would land in the next hour)
SQ_HOUR = "CAST(strftime('%s', substr({t}.expires_at, 1, 19)) AS INTEGER) / 3600"
SQ_LIVE = "{t}.remaining > 0 AND {t}.expires_at IS NOT NULL"
SQ_TRIGGERS = {
    "lot_expiry_ins": f"""AFTER INSERT ON points_lots WHEN {SQ_LIVE.format(t='NEW')} BEGIN
        INSERT INTO lot_expiry_hours (hour, points)
        VALUES ({SQ_HOUR.format(t='NEW')}, NEW.remaining); END""",
    "lot_expiry_del": f"""AFTER DELETE ON points_lots WHEN {SQ_LIVE.format(t='OLD')} BEGIN
        INSERT INTO lot_expiry_hours (hour, points)
        VALUES ({SQ_HOUR.format(t='OLD')}, -OLD.remaining); END""",
    "lot_expiry_upd": f"""AFTER UPDATE OF remaining, expires_at ON points_lots BEGIN
        INSERT INTO lot_expiry_hours (hour, points)
        SELECT {SQ_HOUR.format(t='OLD')}, -OLD.remaining WHERE {SQ_LIVE.format(t='OLD')};
        INSERT INTO lot_expiry_hours (hour, points)
        SELECT {SQ_HOUR.format(t='NEW')}, NEW.remaining WHERE {SQ_LIVE.format(t='NEW')};
        END""",
}


def _packs() -> None:
    """Slots for every member with a month, and every month's pack (the fold keeps them
    from then on: services.rollup.refresh_packs)."""
    op.create_table('member_slots',
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_member_slots')),
    sa.UniqueConstraint('slot', name=op.f('uq_member_slots_slot'))
    )
    op.create_table('month_packs',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('members', sa.Integer(), nullable=False),
    sa.Column('slots', sa.LargeBinary(), nullable=False),
    sa.Column('visit_days', sa.LargeBinary(), nullable=False),
    sa.Column('earned', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('month', name=op.f('pk_month_packs'))
    )
    op.execute("""INSERT INTO member_slots (member_id, slot)
        SELECT member_id, row_number() OVER (ORDER BY member_id)
        FROM (SELECT DISTINCT member_id FROM member_months) t""")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("""INSERT INTO month_packs (month, members, slots, visit_days, earned)
            SELECT mm.month, count(*), string_agg(int4send(x.slot), ''::bytea ORDER BY x.slot),
                   string_agg(int4send(mm.visit_days::int), ''::bytea ORDER BY x.slot),
                   string_agg(int8send(mm.earned), ''::bytea ORDER BY x.slot)
            FROM member_months mm JOIN member_slots x ON x.member_id = mm.member_id
            GROUP BY mm.month""")
        return
    import numpy as np  # SQLite, the small trial store: the same bytes built here

    types: tuple[Any, ...] = (np.dtype(">i4"), np.dtype(">i4"), np.dtype(">i8"))
    months = [m for (m,) in bind.execute(sa.text(
        "SELECT DISTINCT month FROM member_months ORDER BY month"))]
    for month in months:
        rows = bind.execute(sa.text("""SELECT x.slot, mm.visit_days, mm.earned
            FROM member_months mm JOIN member_slots x ON x.member_id = mm.member_id
            WHERE mm.month = :m ORDER BY x.slot"""), {"m": month}).all()
        a = np.array([tuple(r) for r in rows], dtype=np.int64).reshape(-1, 3)
        packed = [a[:, i].astype(t).tobytes() for i, t in enumerate(types)]
        bind.execute(sa.text("""INSERT INTO month_packs (month, members, slots, visit_days,
            earned) VALUES (:m, :n, :s, :v, :e)"""),
            {"m": month, "n": len(rows), "s": packed[0], "v": packed[1], "e": packed[2]})


# members and their positive balances (the overview's outstanding points and members)
PG_TOTALS = {
    "member_totals_ins": """
        INSERT INTO member_totals (members, outstanding)
        SELECT count(*), coalesce(sum(greatest(n.balance, 0)), 0) FROM new_members n
        HAVING count(*) > 0""",
    "member_totals_del": """
        INSERT INTO member_totals (members, outstanding)
        SELECT -count(*), -coalesce(sum(greatest(o.balance, 0)), 0) FROM old_members o
        HAVING count(*) > 0""",
    "member_totals_upd": """
        INSERT INTO member_totals (members, outstanding)
        SELECT 0, d FROM (SELECT
          (SELECT coalesce(sum(greatest(n.balance, 0)), 0) FROM new_members n)
          - (SELECT coalesce(sum(greatest(o.balance, 0)), 0) FROM old_members o) AS d) t
        WHERE d <> 0""",
}
PG_TOTALS_TRIGGERS = (
    ("member_totals_ins", "INSERT", "NEW TABLE AS new_members"),
    ("member_totals_del", "DELETE", "OLD TABLE AS old_members"),
    ("member_totals_upd", "UPDATE", "OLD TABLE AS old_members NEW TABLE AS new_members"))
SQ_TOTALS = {
    "member_totals_ins": """AFTER INSERT ON members BEGIN
        INSERT INTO member_totals (members, outstanding) VALUES (1, max(NEW.balance, 0));
        END""",
    "member_totals_del": """AFTER DELETE ON members BEGIN
        INSERT INTO member_totals (members, outstanding) VALUES (-1, -max(OLD.balance, 0));
        END""",
    "member_totals_upd": """AFTER UPDATE OF balance ON members
        WHEN max(NEW.balance, 0) <> max(OLD.balance, 0) BEGIN
        INSERT INTO member_totals (members, outstanding)
        VALUES (0, max(NEW.balance, 0) - max(OLD.balance, 0)); END""",
}


def _totals() -> None:
    op.create_table('member_totals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('members', sa.BigInteger(), nullable=False),
    sa.Column('outstanding', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_totals'))
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, body in PG_TOTALS.items():
            op.execute(f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN {body}; RETURN NULL; END $$""")
        for name, event, refs in PG_TOTALS_TRIGGERS:
            op.execute(f"""CREATE TRIGGER {name} AFTER {event} ON members
                REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {name}()""")
        pos = "greatest(balance, 0)"
    else:
        for name, body in SQ_TOTALS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        pos = "max(balance, 0)"
    op.execute(f"""INSERT INTO member_totals (members, outstanding)
        SELECT count(*), coalesce(sum({pos}), 0) FROM members""")


def upgrade() -> None:
    _packs()
    _totals()
    op.create_index('ix_member_months_member', 'member_months', ['member_id', 'month'],
                    unique=False)
    op.create_table('lot_expiry_hours',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('hour', sa.BigInteger(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_expiry_hours'))
    )
    op.create_index(op.f('ix_lot_expiry_hours_hour'), 'lot_expiry_hours', ['hour'],
                    unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # no lot changes between the triggers' creation and the fill below: CREATE TRIGGER
        # holds a lock that blocks writers to points_lots until this migration commits
        for name, body in PG_FUNCTIONS.items():
            op.execute(f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN {body}; RETURN NULL; END $$""")
        for name, event, refs in PG_TRIGGERS:
            op.execute(f"""CREATE TRIGGER {name} AFTER {event} ON points_lots
                REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {name}()""")
        hour, live = PG_HOUR.format(t="l"), PG_LIVE.format(t="l")
    else:
        for name, body in SQ_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        hour, live = SQ_HOUR.format(t="l"), SQ_LIVE.format(t="l")
    op.execute(f"""INSERT INTO lot_expiry_hours (hour, points)
        SELECT {hour}, sum(l.remaining) FROM points_lots l WHERE {live} GROUP BY 1""")


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for name in PG_TOTALS:
        op.execute(f"DROP TRIGGER {name} ON members" if pg else f"DROP TRIGGER {name}")
        if pg:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table('member_totals')
    for name in ("lot_expiry_ins", "lot_expiry_del", "lot_expiry_upd"):
        op.execute(f"DROP TRIGGER {name} ON points_lots" if pg else f"DROP TRIGGER {name}")
        if pg:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_index(op.f('ix_lot_expiry_hours_hour'), table_name='lot_expiry_hours')
    op.drop_table('lot_expiry_hours')
    op.drop_index('ix_member_months_member', table_name='member_months')
    op.drop_table('month_packs')
    op.drop_table('member_slots')
