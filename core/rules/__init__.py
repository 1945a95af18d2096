"""Pure logic with no database: vocabularies and ranks, roll-up, patterns, numbers, dead jobs."""
