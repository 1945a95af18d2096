"""The area's server: asyncio listener, single group-commit writer, reader threads, lifecycle."""
