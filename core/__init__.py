"""dbtool core: the command registry, client, server, database layer, handlers and rules.

Kept import-light: the client path imports this package, so nothing heavy belongs here.
"""

__version__ = "0.1.0"

# Bumped whenever a message shape changes incompatibly; client and server must agree.
PROTOCOL = 2  # 2: the server proves the key too (mutual authentication)
