"""Business rules as plain functions on a SQLAlchemy ``Session`` (no HTTP, no CLI): the web
routers, the CLI and the jobs call them inside a transaction and commit."""
