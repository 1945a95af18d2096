"""Projects: areas by alias (CCP4i's DbOpen/DbClose), in a registry of the user's own.

``$XDG_CONFIG_HOME/dbtool/projects.toml`` (``~/.config/dbtool/projects.toml`` by default)::

    [projects]
    nightly = "/data/ci/area"

``--project ALIAS`` (or ``$DBTOOL_PROJECT``) selects that area from anywhere. The registry is read
only then — the client's hot path never opens it — and written by ``dbtool projects add|remove``:
read, changed and replaced as a whole (a new file of a random name, fsynced, renamed into place)
under ``projects.toml.lock``, so that two of them at once lose neither's change.
"""

from __future__ import annotations

import os

from .area import Area
from .errors import Refused

FILE = "projects.toml"
MAX_ALIAS = 64
MAX_PROJECTS = 10_000
HEADER = "# dbtool projects: alias = area directory (`dbtool projects add|remove|list`; written by dbtool).\n"


def registry_path() -> str:
    """The user's registry: under $XDG_CONFIG_HOME (when it is an absolute path, as the XDG spec
    asks), else ~/.config."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dbtool", FILE)


def alias_problem(alias: object) -> str:
    """What is wrong with an alias ('' when it is fine)."""
    if not isinstance(alias, str) or not alias:
        return "a project alias must be non-empty text"
    if len(alias) > MAX_ALIAS:
        return f"project alias {alias[:MAX_ALIAS]!r}... is longer than {MAX_ALIAS} characters"
    if alias[0] in "-." or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in alias):
        return (
            f"project alias {alias!r} is not a name: use letters, digits, '_', '-' and '.', "
            "not starting with '-' or '.'"
        )
    return ""


def load(path: str | None = None) -> dict[str, str]:
    """alias → area directory; {} when there is no registry yet. Refused (naming the file) when it
    cannot be read or is not a registry."""
    import tomllib

    path = path or registry_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise Refused(f"cannot read the project registry {path}: {err}; correct or remove it") from None
    projects = data.get("projects", {})
    if not isinstance(projects, dict) or not all(isinstance(v, str) for v in projects.values()):
        raise Refused(f"{path}: [projects] must map each alias to an area directory (text); correct or remove it")
    return dict(projects)


def area_of(alias: str, given_by: str) -> str:
    """The area directory of a project; Refused (exit 4) for an alias the registry does not have,
    and for a project whose directory is no longer an area."""
    problem = alias_problem(alias)
    if problem:
        raise Refused(f"{given_by}: {problem}")
    path = registry_path()
    projects = load(path)
    root = projects.get(alias)
    if root is None:
        raise Refused(
            f"no project {alias!r} ({given_by}) in {path}; `dbtool projects list` shows them, "
            f"`dbtool projects add {alias} PATH` adds it"
        )
    if not Area(root).probe():
        raise Refused(
            f"project {alias!r} is {root}, which is not a dbtool area (moved or removed?); "
            f"`dbtool projects add {alias} PATH --replace` points it at the area"
        )
    return root


def add(alias: str, root: str, replace: bool = False) -> bool:
    """Register an area under an alias; False when it was registered so already."""
    problem = alias_problem(alias)
    if problem:
        raise Refused(problem)
    root = os.path.abspath(os.path.expanduser(root))
    try:
        root.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"{root!r} is not valid UTF-8: the registry is a TOML file of text") from None
    if not Area(root).probe():
        raise Refused(f"{root} is not a dbtool area; create it first with `dbtool init {root} --keys K1,K2`")

    def change(projects: dict[str, str]) -> bool:
        known = projects.get(alias)
        if known == root:
            return False
        if known is not None and not replace:
            raise Refused(f"project {alias!r} is {known} already; `--replace` points it at {root}")
        if known is None and len(projects) >= MAX_PROJECTS:
            raise Refused(f"the registry holds {MAX_PROJECTS} projects already; remove some first")
        projects[alias] = root
        return True

    return _update(change)


def remove(alias: str) -> str:
    """Forget a project (its area is left as it is); returns its directory. Refused when unknown."""

    def change(projects: dict[str, str]) -> str:
        if alias not in projects:
            raise Refused(f"no project {alias!r} in {registry_path()}; `dbtool projects list` shows them")
        return projects.pop(alias)

    return _update(change)


def _update(change):
    """Read the registry, apply ``change`` (which returns what to answer), write it back: under the
    registry's lock, atomically."""
    from filelock import FileLock

    path = registry_path()
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with FileLock(path + ".lock", timeout=30):
            projects = load(path)
            before = dict(projects)
            answer = change(projects)
            if projects != before:
                _write(path, projects)
    except OSError as err:
        raise Refused(f"cannot write the project registry {path}: {err.strerror or err}") from None
    return answer


def _write(path: str, projects: dict[str, str]) -> None:
    import tempfile

    lines = [HEADER, "[projects]\n"]
    lines += [f"{_toml_string(alias)} = {_toml_string(root)}\n" for alias, root in sorted(projects.items())]
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself is durable once the directory is
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, and DEL, which TOML does not allow raw, escaped."""
    import json

    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
