"""The results grid in a browser: the one-file HTML report and the live dashboard (never on the client path)."""
