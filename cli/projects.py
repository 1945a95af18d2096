"""``dbtool projects add|remove|list``: areas by alias, in the user's registry (core/projects.py)."""

from __future__ import annotations

from dbtool.core import projects
from dbtool.core.area import Area
from dbtool.core.errors import Refused

from .binder import GlobalOptions
from .output import show


def add(opts: GlobalOptions, *, alias: str, path: str, replace: bool = False) -> int:
    projects.add(alias, path, replace)
    return 0


def remove(opts: GlobalOptions, *, alias: str) -> int:
    projects.remove(alias)
    return 0


def list_projects(opts: GlobalOptions) -> int:
    rows = [
        {"alias": alias, "path": root, "status": "ok" if _is_area(root) else "not an area"}
        for alias, root in sorted(projects.load().items())
    ]
    show(rows, opts, header=("alias", "path", "status"), name="projects list")
    return 0


def _is_area(root: str) -> bool:
    try:
        return Area(root).probe()
    except Refused:  # (a directory this user may not read: for this user, not an area)
        return False
