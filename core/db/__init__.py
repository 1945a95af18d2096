"""The database layer: SQLModel tables, engines, dialect helpers and the handler context."""
