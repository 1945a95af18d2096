"""``dbtool config list|get|set``: the area's config.toml, read and edited with its comments and layout
kept (tomlkit, imported only here), every value checked by the schema load_config uses
(core/area.py SETTINGS, check_setting)."""

from __future__ import annotations

import os
import sys
import tempfile

from dbtool.core.area import DEFAULT_CONFIG, SETTINGS, check_setting, find_area, known_settings
from dbtool.core.errors import NotFound, Refused

from .binder import GlobalOptions
from .output import emit, render, show

# Settings the server reads while it runs (each request): the others apply at its next start.
LIVE = frozenset()


def _split(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    if (section, name) not in SETTINGS:
        raise Refused(f"{key!r} is not a setting; the settings are: {', '.join(known_settings())}")
    return section, name


def _read(path: str):
    import tomlkit

    try:
        with open(path, encoding="utf-8") as f:
            return tomlkit.parse(f.read())
    except OSError as err:
        raise Refused(f"cannot read {path}: {err.strerror}") from None
    except tomlkit.exceptions.ParseError as err:
        raise Refused(f"cannot read {path}: {err}; fix the file first") from None


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def config_list(opts: GlobalOptions) -> int:
    area = find_area(opts.area)
    doc = _read(area.config_path)
    rows = []
    for section, name in SETTINGS:
        values = doc.get(section) or {}
        if name in values:
            rows.append({"key": f"{section}.{name}", "value": _plain(values[name]), "default": False})
        else:
            rows.append({"key": f"{section}.{name}", "value": DEFAULT_CONFIG[section][name], "default": True})
    if opts.output == "table":
        emit("".join(f"{r['key']} = {_text(r['value'])}{'  (default)' if r['default'] else ''}\n" for r in rows))
    else:
        show(rows, opts, name="config list")
    return 0


def _plain(value: object) -> object:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if unwrap else value


def config_get(opts: GlobalOptions, *, key: str) -> int:
    """The value of one setting (its default when config.toml does not set it; every setting has one)."""
    area = find_area(opts.area)
    section, name = _split(key)
    doc = _read(area.config_path)
    values = doc.get(section) or {}
    if name in values:
        value = _plain(values[name])
    elif name in DEFAULT_CONFIG.get(section, {}):
        value = DEFAULT_CONFIG[section][name]
    else:  # pragma: no cover - every setting has a default
        raise NotFound(f"{key} is not set")
    emit(_text(value) + "\n" if opts.output == "table" else render(value, opts.output))
    return 0


def _parse(text: str, section: str, name: str) -> object:
    """The command-line word as the setting's kind wants it: true/false, a number, else text."""
    kind = SETTINGS[(section, name)][0]
    if kind == "bool":
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text
    if kind in ("count", "port", "seconds"):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def config_set(opts: GlobalOptions, *, key: str, value: str) -> int:
    area = find_area(opts.area)
    section, name = _split(key)
    checked = check_setting(area.config_path, section, name, _parse(value, section, name))
    if SETTINGS[(section, name)][0] == "word":
        checked = str(checked)
    doc = _read(area.config_path)
    import tomlkit

    if section not in doc:
        doc[section] = tomlkit.table()
    doc[section][name] = checked
    _write_atomically(area.config_path, tomlkit.dumps(doc))
    if (section, name) not in LIVE and os.path.exists(area.server_json):
        print(
            f"dbtool: note: a server runs for {area.root}; {key} applies when it starts again (dbtool server restart)",
            file=sys.stderr,
        )
    return 0


def _write_atomically(path: str, text: str) -> None:
    """Replace the file by a temporary file of the new text in its directory, fsynced, then renamed;
    on any error the old file is left as it was."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, os.stat(path).st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
