"""Persistence: SQLAlchemy 2 tables, engines and sessions (Postgres, or embedded SQLite)."""
