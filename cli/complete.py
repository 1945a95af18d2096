"""Shell completion straight from the registry, without Typer (``_DBTOOL_COMPLETE``, see completions/).

The scripts in completions/ (Typer's own) call ``dbtool`` back with ``_DBTOOL_COMPLETE=complete_<shell>``
and the words typed so far. Building the Typer app for every Tab cost about a quarter of a second;
this module answers the same protocol from the registry alone: command names, option names, and
values — fixed choices, the state and status vocabularies (core/rules/vocab.py), project aliases,
and run ids, test names and test ids read from the area's SQLite file (read-only, a short busy
timeout; never a server start). Any error gives no candidates, never a traceback.
"""

from __future__ import annotations

import os
import sys

from dbtool.core.commands import COMMANDS, Command, Param

from .binder import GLOBAL_FLAGS, GLOBAL_VALUES, GROUPS, WITHOUT_COMMON
from .output import FORMATS

GLOBAL_HELP = {
    "--area": "the area directory",
    "--project": "the area registered under this alias",
    "--timeout": "seconds to wait for a busy or starting server",
    "--trace": "print the request's server-side log entries to stderr",
    "--json": "print the result as JSON",
    "--format": "output format: table, json, ndjson, csv or tsv",
    "--field": "NAME=VALUE: a field of the request",
    "--fields": "A,B: print only these fields of each record",
    "--no-header": "tables, csv and tsv without their header line",
    "--jq": "EXPR: filter the JSON result through jq",
}
MAX_CANDIDATES = 200
DB_TIMEOUT = 0.05  # seconds a completion waits for a locked database


def split_words(text: str) -> list[str]:
    """The words of a command line as a POSIX shell splits them: quotes and backslashes; an unfinished
    quote ends the last word. (By hand: shlex imports re and enum, a quarter of a Tab's time.)"""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and text[i + 1 : i + 2] in ('"', "\\", "$", "`"):
                i += 1
                word.append(text[i])
            else:
                word.append(c)
        elif c in "'\"":
            quote, started = c, True
        elif c == "\\" and i + 1 < len(text):
            i += 1
            word.append(text[i])
            started = True
        elif c.isspace():
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def shell_words(shell: str) -> tuple[list[str], str]:
    """(the words before the one being completed, that word) from the protocol's variables."""
    if shell == "bash":
        words = split_words(os.environ.get("COMP_WORDS", ""))
        cword = int(os.environ.get("COMP_CWORD", "0"))
        return words[1:cword], words[cword] if cword < len(words) else ""
    text = os.environ.get("_TYPER_COMPLETE_ARGS", "")
    words = split_words(text)[1:]
    if words and not text.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


# -- candidates -----------------------------------------------------------------------------


def candidates(args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """(value, help) pairs for the word ``incomplete`` after ``args``."""
    given: dict[str, str] = {}  # option → its value, as typed so far (the area, the run id)
    i = 0
    while i < len(args) and args[i].startswith("--"):
        name, eq, value = args[i].partition("=")
        if name in GLOBAL_VALUES and not eq:
            if i + 1 >= len(args):
                return _global_value(name, incomplete, given)
            given[name] = args[i + 1]
            i += 2
        else:
            if eq:
                given[name] = value
            i += 1
    words = args[i:]
    if not words:
        if incomplete.startswith("-"):
            return _options_of(None, incomplete, [])
        return _command_names(incomplete)
    first = words[0]
    if first in GROUPS:
        if len(words) == 1:
            return _group_members(first, incomplete)
        cmd, rest = COMMANDS.get(f"{first} {words[1]}"), words[2:]
    else:
        cmd, rest = COMMANDS.get(first), words[1:]
    if cmd is None or cmd.hidden:
        return []
    return _in_command(cmd, rest, incomplete, given)


def _command_names(incomplete: str) -> list[tuple[str, str]]:
    from .guide import GROUP_SUMMARY

    out: dict[str, str] = {}
    for cmd in COMMANDS.values():
        if cmd.hidden:  # (a dead entry is still a command: it is refused with its explanation)
            continue
        first = cmd.name.split(" ", 1)[0]
        if first.startswith(incomplete) and first not in out:
            out[first] = GROUP_SUMMARY.get(first) or _summary(cmd)
    return sorted(out.items())


def _group_members(group: str, incomplete: str) -> list[tuple[str, str]]:
    out = []
    for cmd in COMMANDS.values():
        first, _, rest = cmd.name.partition(" ")
        if first == group and rest and rest.startswith(incomplete) and not cmd.hidden:
            out.append((rest, _summary(cmd)))
    return sorted(out)


def _summary(cmd: Command) -> str:
    text = cmd.summary
    end = text.find(". ")
    return text[:end] if end > 0 else text.removesuffix(".")


def _options_of(cmd: Command | None, incomplete: str, used: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    own: set[str] = set()
    if cmd is not None:
        for p in cmd.params:
            if p.positional or p.type == "argv":
                continue
            for option in p.options:
                own.add(option)
                if option.startswith(incomplete) and (p.multiple or option not in used):
                    out.append((option, p.help))
    if cmd is None or cmd.name not in WITHOUT_COMMON:
        for option in (*GLOBAL_VALUES, *GLOBAL_FLAGS):
            if option in own or not option.startswith(incomplete):
                continue
            if option in used and option != "--field":
                continue
            out.append((option, GLOBAL_HELP[option]))
    if cmd is None and "--version".startswith(incomplete):
        out.append(("--version", "print dbtool's version and exit"))
    for option, text in (("-h", "show the help and exit"), ("--help", "show the help and exit")):
        if option.startswith(incomplete):
            out.append((option, text))
    return out


def _in_command(cmd: Command, rest: list[str], incomplete: str, given: dict[str, str]) -> list[tuple[str, str]]:
    by_option = {o: p for p in cmd.params if not p.positional and p.type != "argv" for o in p.options}
    used: list[str] = []
    positionals: list[str] = []
    pending: Param | None = None
    pending_global = ""
    for word in rest:
        if word == "--":
            return []  # the command's own words (exec -- CMD): the shell completes files
        if not word.startswith("-") and pending is None and not pending_global:
            positionals.append(word)
            continue
        if pending is not None or pending_global:
            given[pending.option if pending is not None else pending_global] = word
            pending, pending_global = None, ""
            continue
        name, eq, value = word.partition("=")
        p = by_option.get(name)
        if p is not None:
            used.append(name)
            if p.type != "bool":
                if eq:
                    given[p.option] = value
                else:
                    pending = p
        elif name in GLOBAL_VALUES or name in GLOBAL_FLAGS:
            used.append(name)
            if name in GLOBAL_VALUES:
                if eq:
                    given[name] = value
                else:
                    pending_global = name
    if pending is not None:
        return _values(pending, incomplete, given)
    if pending_global:
        return _global_value(pending_global, incomplete, given)
    if incomplete.startswith("-"):
        name, eq, value = incomplete.partition("=")
        if eq and name in by_option:
            return _values(by_option[name], value, given)
        if eq and name in GLOBAL_VALUES:
            return _global_value(name, value, given)
        return _options_of(cmd, incomplete, used)
    if cmd.name == "help":  # dbtool help COMMAND
        return candidates(positionals, incomplete)
    takes = [p for p in cmd.params if p.positional]
    if len(positionals) < len(takes) and takes[len(positionals)].choices:
        return _values(takes[len(positionals)], incomplete, given)
    return []


def _global_value(option: str, incomplete: str, given: dict[str, str]) -> list[tuple[str, str]]:
    if option == "--format":
        return [(f, "") for f in FORMATS if f.startswith(incomplete)]
    if option == "--project":
        from dbtool.core.projects import load

        return sorted((alias, "") for alias in load() if alias.startswith(incomplete))
    return []  # --area: the shell completes directories


STATE_PARAMS = frozenset({"state", "states", "curr_state", "new_state"})
STATUS_PARAMS = frozenset({"status", "statuses", "curr_status", "new_status"})


def _values(p: Param, incomplete: str, given: dict[str, str]) -> list[tuple[str, str]]:
    head = ""
    if p.type == "list" and not p.multiple and "," in incomplete:  # a comma list: complete its last part
        head, _, incomplete = incomplete.rpartition(",")
        head += ","
    if p.choices:
        found = [(c, "") for c in p.choices if c.startswith(incomplete)]
    elif p.name in STATE_PARAMS:
        from dbtool.core.rules import vocab

        found = [(s, "") for s in _states(vocab) if s.startswith(incomplete)]
    elif p.name in STATUS_PARAMS:
        from dbtool.core.rules import vocab

        found = [(s, "") for s in _statuses(vocab) if s.startswith(incomplete)]
    elif p.name in ("run_id", "run_ids", "test_id", "testname", "testnames"):
        found = _from_area(p.name, incomplete, given)
    else:
        return []
    return [(head + value, text) for value, text in found]


def _states(vocab) -> list[str]:
    names = [*vocab.STATE_RANK, *sorted(vocab.RUNNING_STATES | vocab.ENDED_STATES | vocab.DONT_ROLL_UP_STATES)]
    return list(dict.fromkeys([*names, *vocab.FINAL_STATES]))


def _statuses(vocab) -> list[str]:
    return list(dict.fromkeys([*vocab.RUN_STATUS_RANK, *vocab.FAIL_LIKE]))


# -- the area's database ----------------------------------------------------------------------


def _connect(given: dict[str, str]):
    """A read-only connection to the area's SQLite file, or None (no area, a PostgreSQL area)."""
    from dbtool.core.area import find_area

    explicit = given.get("--area")
    if explicit is None and given.get("--project"):
        from dbtool.core.projects import area_of

        explicit = area_of(given["--project"], "--project")
    area = find_area(explicit)
    if area.shared or not os.path.isfile(area.db_path):
        return None
    import sqlite3
    from urllib.parse import quote

    conn = sqlite3.connect(f"file:{quote(area.db_path)}?mode=ro", uri=True, timeout=DB_TIMEOUT)
    conn.execute(f"PRAGMA busy_timeout = {int(DB_TIMEOUT * 1000)}")
    return conn


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _from_area(name: str, incomplete: str, given: dict[str, str]) -> list[tuple[str, str]]:
    conn = _connect(given)
    if conn is None:
        return []
    try:
        run_id = _int(given.get("--run-id"))
        if name in ("run_id", "run_ids"):
            head = ""
            if name == "run_ids" and "," in incomplete:
                head, _, incomplete = incomplete.rpartition(",")
                head += ","
            rows = conn.execute(
                "SELECT id, runname, state, status FROM runs WHERE deleted_at IS NULL "
                "AND CAST(id AS TEXT) LIKE ? ORDER BY id DESC LIMIT ?",
                (_like(incomplete), MAX_CANDIDATES),
            ).fetchall()
            return [(head + str(i), f"{runname} {state}/{status}".strip()) for i, runname, state, status in rows]
        if name == "test_id":
            where, args = ("AND run_id = ? ", (run_id,)) if run_id is not None else ("", ())
            rows = conn.execute(
                "SELECT id, testname, item_path, state, status FROM tests WHERE state != 'DELETED' "
                f"{where}AND CAST(id AS TEXT) LIKE ? ORDER BY id DESC LIMIT ?",
                (*args, _like(incomplete), MAX_CANDIDATES),
            ).fetchall()
            return [
                (str(i), f"{testname}{'/' + item if item else ''} {state}/{status}")
                for i, testname, item, state, status in rows
            ]
        # testname(s): the names in the run when --run-id was given, else in the area
        head = ""
        if name == "testnames" and "," in incomplete:
            head, _, incomplete = incomplete.rpartition(",")
            head += ","
        where, args = ("run_id = ? AND ", (run_id,)) if run_id is not None else ("", ())
        rows = conn.execute(
            f"SELECT DISTINCT testname FROM tests WHERE {where}testname LIKE ? ESCAPE '\\' ORDER BY testname LIMIT ?",
            (*args, _like(incomplete), MAX_CANDIDATES),
        ).fetchall()
        return [(head + row[0], "") for row in rows if row[0] and row[0].startswith(incomplete)]
    finally:
        conn.close()


def _like(prefix: str) -> str:
    """A LIKE pattern for the values starting with ``prefix`` (its wildcards escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- the protocol -----------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _zsh_quote(text: str) -> str:
    # The candidates are eval'ed inside `_arguments '*: :(("value":"help" ...))'` (as cli/app.py's).
    return text.replace('"', '""').replace("'", "'\\''").replace("$", "\\$").replace("`", "\\`").replace(":", r"\\:")


def format_reply(shell: str, found: list[tuple[str, str]]) -> str:
    if shell == "bash":
        return "\n".join(value for value, _ in found)
    if shell == "zsh":
        if not found:
            return "_files"
        items = [f'"{_zsh_quote(v)}":"{_zsh_quote(_one_line(h))}"' if h else f'"{_zsh_quote(v)}"' for v, h in found]
        return "_arguments '*: :((" + "\n".join(items) + "))'"
    return "\n".join(f"{v}\t{_one_line(h)}" if h else v for v, h in found)


def run(instruction: str) -> int:
    """Answer one completion request (``complete_bash`` …); the exit code for the shell."""
    shell = instruction.partition("_")[2]
    if shell not in ("bash", "zsh", "fish"):
        print(f"dbtool: error: shell completion for {shell or instruction!r} is not supported", file=sys.stderr)
        return 1
    try:
        args, incomplete = shell_words(shell)
        found = candidates(args, incomplete)
    except Exception:  # a completion never prints a traceback: no candidates
        found = []
    if shell == "fish" and os.environ.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
        return 0 if found else 1
    reply = format_reply(shell, found)
    if reply:
        sys.stdout.write(reply + "\n")
    return 0
