"""parkedge-central: the points programme's home (members, points lots, POS, rewards, figures).

Layers, top to bottom: ``cli`` -> ``app`` (composition root) -> ``web`` / ``jobs`` ->
``services`` (plain functions on a SQLAlchemy session) -> ``db`` (models, Alembic). Pricing
and earning rules come from ``edge.pricing``, the same engine the lanes run.
"""
