"""``python -m dbtool.core.server --area PATH``: how clients start a detached server."""

import sys

from .app import main

sys.exit(main())
