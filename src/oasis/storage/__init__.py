"""Persistence: SQLAlchemy tables, repositories, migrations."""
