"""``python -m dbtool.cli``: the same as the ``dbtool`` command."""

from .main import main

main()
