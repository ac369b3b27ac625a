"""Persistence: SQLModel schema, content-addressed artifacts, media I/O."""
