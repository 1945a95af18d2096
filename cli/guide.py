"""Help that guides: each command's family (the top-level help's sections) and its examples.

Keyed by command name, apart from the registry (core/commands.py) so that the two change
independently: ``family(cmd)`` derives a command's family from its handler's module unless
``BY_NAME`` says otherwise, and ``EXAMPLES`` holds real invocations, each with a one-line
explanation, shown in ``dbtool COMMAND --help`` and in the man pages (tests/test_guide.py runs
every one of them through the parser). Also the local commands ``completion`` and ``help``.
"""

from __future__ import annotations

import re
import sys

from dbtool.core.commands import Command

# The families in the order the top-level help shows them: (key, title).
FAMILIES = (
    ("setup", "Areas, projects and help"),
    ("server", "The area's server"),
    ("runs", "Runs"),
    ("tests", "Tests"),
    ("jobs", "Running jobs"),
    ("steps", "Steps, test data and data items"),
    ("results", "Results: compare, history, reports, JUnit"),
    ("vars", "Variables"),
    ("lock", "The area lock"),
    ("meta", "Test metadata and the task queue"),
    ("processes", "Processes"),
    ("archive", "Archives"),
    ("changes", "Change tracking"),
    ("misc", "Other Megatest entries"),
)
TITLES = dict(FAMILIES)

# A handler's module (``runs.get_runs``, ``local:init``) → family.
BY_MODULE = {
    "runs": "runs",
    "completion": "runs",
    "tests": "tests",
    "deadjobs": "tests",
    "prereqs": "tests",
    "steps": "steps",
    "testdata": "steps",
    "items": "steps",
    "outputs": "steps",
    "compare": "results",
    "junit": "results",
    "grid": "results",
    "vars": "vars",
    "nosync": "vars",
    "arealock": "lock",
    "meta": "meta",
    "tasks": "meta",
    "processes": "processes",
    "archives": "archive",
    "changes": "changes",
    "misc": "misc",
    "jobexec": "jobs",
    "waitrun": "jobs",
    "projects": "setup",
    "migrate": "setup",
    "demo": "setup",
    "guide": "setup",
}
BY_NAME = {
    "init": "setup",
    "watch": "jobs",
    "start-server": "server",
    "kill-server": "server",
    "ping": "server",
    "login": "server",
    "get-latest-host-load": "processes",
    "get-keys": "runs",
    "get-keys-write": "runs",
}


# The one-line summary of a two-word group's name (as completion shows it; cli/app.py has the full help).
GROUP_SUMMARY = {"server": "Start, stop and inspect the area's server", "projects": "Areas by alias"}


def family(cmd: Command) -> str:
    """The family key of a command (``misc`` when nothing says otherwise)."""
    if cmd.name in BY_NAME:
        return BY_NAME[cmd.name]
    if cmd.name.startswith("server "):
        return "server"
    module = cmd.handler.replace(":", ".").split(".", 1)[0]
    return BY_MODULE.get(module, "misc")


# Command name → ((command line after `dbtool`, what it does), ...). Every line must parse
# (tests/test_guide.py); ids are those an example area would print.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "init": (
        (
            "init --keys RELEASE,PLATFORM",
            "make the current directory an area whose runs are keyed by release and platform",
        ),
        ("init /data/ci --keys BRANCH", "create the area in /data/ci, keyed by branch"),
    ),
    "completion": (
        ("completion bash > ~/.local/share/bash-completion/completions/dbtool", "install bash completion by hand"),
        ("completion zsh > ~/.zfunc/_dbtool", "install zsh completion in a directory on $fpath"),
    ),
    "help": (
        ("help get-runs", "the help of get-runs, as `dbtool get-runs --help` prints it"),
        ("help server start", "the help of a two-word command"),
    ),
    "server start": (
        ("server start", "start the area's server in the background and print its address"),
        ("server start --idle-timeout 3600", "start it, stopping by itself after an hour without requests"),
    ),
    "server status": (("server status", "is a server running, where, since when, how busy (exit 3: none)"),),
    "server stop": (("server stop", "stop it gracefully after the queued writes"),),
    "server log": (
        ("server log --limit 20", "the last 20 requests the server logged"),
        ("server log --cmd register-test --since 10m", "the register-test requests of the last ten minutes"),
        ("server log --request r-1f2e3d", "the request an error message named"),
    ),
    "register-run": (
        ("register-run --target v1.2/linux --runname nightly", "register (or find) a run and print its id"),
        (
            "register-run --target v1.2/linux --runname nightly --state RUNNING --status n/a",
            "register it with a state and status",
        ),
    ),
    "get-runs": (
        ("get-runs", "every run of the area, newest first"),
        ("get-runs --target 'v1.2/%' --limit 10", "the ten newest runs of release v1.2, any platform"),
        ("--json get-runs --runname nightly", "the nightly runs as JSON, for a script"),
    ),
    "get-run-info": (("get-run-info --run-id 12", "the record of run 12: target, name, state, status, times"),),
    "delete-run": (("delete-run --run-id 12", "delete run 12 with its tests, steps and data"),),
    "register-test": (
        ("register-test --run-id 12 --testname build", "register test build in run 12 and print its id"),
        ("register-test --run-id 12 --testname unit --item-path linux/py311", "register one item of test unit"),
    ),
    "get-test-id": (
        ("get-test-id --run-id 12 --testname build", "the id of test build of run 12 (exit 1 if there is none)"),
    ),
    "set-state-status-and-roll-up-items": (
        (
            "set-state-status-and-roll-up-items --run-id 12 --testname unit --item-path linux --state COMPLETED "
            "--status PASS",
            "finish an item and roll the result up into its toplevel test and the run",
        ),
        (
            "set-state-status-and-roll-up-items --run-id 12 --testname build --state RUNNING --status n/a",
            "mark a test running",
        ),
    ),
    "test-set-state-status-by-id": (
        (
            "test-set-state-status-by-id --test-id 345 --state COMPLETED --status FAIL --comment 'exit 2'",
            "finish test 345 as failed, with a comment",
        ),
    ),
    "get-tests-for-run": (
        ("get-tests-for-run --run-id 12", "every test of run 12"),
        ("get-tests-for-run --run-id 12 --statuses FAIL,ABORT", "only its failed and aborted tests"),
        (
            "get-tests-for-run --run-id 12 --testpatt 'unit/%' --fields id,item_path,status",
            "chosen columns of unit's items",
        ),
        ("get-tests-for-run --run-id 12 --match 'comment=timeout|killed'", "tests whose comment matches a regex"),
    ),
    "have-incompletes": (
        ("have-incompletes --run-id 12", "whether run 12 has tests that stopped making progress"),
        ("have-incompletes --deadtime 600", "the same over every run, dead after ten minutes without progress"),
    ),
    "mark-incomplete": (("mark-incomplete --run-id 12", "mark the dead tests of run 12 INCOMPLETE"),),
    "exec": (
        (
            "exec --run-id 12 --testname build -- make -j8",
            "run make as test build's job: RUNNING, then COMPLETED with PASS or FAIL from its exit code",
        ),
        (
            "exec --run-id 12 --testname unit --item-path linux --log unit.log -- pytest -q",
            "run an item's job, keeping its output as the test's log",
        ),
    ),
    "watch": (
        ("watch --run-id 12", "print the change events of run 12 as they happen"),
        ("watch --since 0 --no-follow", "replay every stored event and stop"),
    ),
    "wait-run": (
        ("wait-run --run-id 12", "block until every test of run 12 has ended; exit status from its result"),
        ("wait-run --run-id 12 --max-wait 3600", "the same, giving up (exit 3) after an hour"),
    ),
    "csv-to-test-data": (
        (
            "csv-to-test-data --test-id 345 --csv 'perf,latency_ms,12.5,10,2,ms'",
            "store one measurement of test 345: category, variable, value, expected, tolerance, units",
        ),
        ("csv-to-test-data --test-id 345 --file results.csv", "store every line of a CSV file"),
    ),
    "read-test-data": (("read-test-data --test-id 345 --category perf", "the perf data of test 345"),),
    "teststep-set-status": (
        (
            "teststep-set-status --test-id 345 --stepname compile --state COMPLETED --status PASS",
            "record the end of step compile of test 345",
        ),
    ),
    "get-steps-for-test": (("get-steps-for-test --test-id 345", "the steps of test 345"),),
    "import-junit": (
        ("import-junit --run-id 12 report.xml", "turn a JUnit XML report into tests of run 12"),
        ("import-junit --run-id 12 build/*.xml", "import several reports at once"),
    ),
    "export-junit": (
        ("export-junit --run-id 12 --output junit.xml", "write run 12 as a JUnit XML report for a CI server"),
    ),
    "compare": (
        ("compare --run-id 12", "what changed since the previous complete run of the same target"),
        ("compare --run-id 12 --baseline 9 --exit-code", "compare with run 9; exit 1 on a regression (a CI gate)"),
    ),
    "history": (
        ("history --testname unit --item-path linux", "the results of item unit/linux across runs"),
        ("history --testname build --target 'v1.2/%' --limit 20", "build's last 20 results on release v1.2"),
    ),
    "flaky": (("flaky --target 'v1.2/%'", "the tests whose result flips between runs of release v1.2"),),
    "report": (
        ("report --run-id 12 --output run12.html", "the results grid of run 12 as one HTML file"),
        ("report --target 'v1.2/%' --last 5 --output v12.html", "the grid of the five newest v1.2 runs"),
    ),
    "dashboard": (
        ("dashboard", "serve the live results grid and open it in a browser"),
        ("dashboard --port 8080 --no-open", "serve it on port 8080 without opening a browser"),
    ),
    "set-var": (("set-var release_branch main", "set the area variable release_branch"),),
    "get-var": (("get-var release_branch", "print it (exit 1 when it is not set)"),),
    "inc-var": (("inc-var build_number", "add one to a counter variable and print the new value"),),
    "lock-area": (("lock-area --reason 'migrating the database'", "lock the area and print the token to write with"),),
    "get-target": (("get-target --run-id 12", "the target of run 12, e.g. v1.2/linux"),),
    "get-run-state-status": (("get-run-state-status --run-id 12", "the state and status of run 12"),),
    "get-run-completion": (("get-run-completion --run-id 12", "how many tests of run 12 have ended"),),
    "projects add": (("projects add nightly /data/ci", "register /data/ci as project nightly"),),
    "ping": (("ping", "check that the area's server answers"),),
    "demo": (("demo", "make a throw-away area, run a few jobs in it and show the results"),),
}


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z(`])")


def first_sentence(text: str) -> str:
    """The first sentence of a help text, without its final period (a NAME line, a list entry)."""
    first = _SENTENCE_END.split(text.split("\n", 1)[0].strip(), maxsplit=1)[0]
    return first.removesuffix(".")


def examples(cmd: Command) -> tuple[tuple[str, str], ...]:
    return EXAMPLES.get(cmd.name, ())


def epilog(cmd: Command) -> str | None:
    """The EXAMPLES paragraph of a command's --help (None when it has none)."""
    parts = []
    lines = [f"  dbtool {line}\n      {text}" for line, text in examples(cmd)]
    if lines:
        parts.append("Examples:\n\n\b\n" + "\n".join(lines))
    if cmd.name == "completion":
        parts += [f"{shell}: {hint}" for shell, hint in INSTALL_HINTS.items()]
    return "\n\n".join(parts) or None


# -- dbtool completion SHELL ----------------------------------------------------------------

INSTALL_HINTS = {
    "bash": "pip install puts this script in PREFIX/share/bash-completion/completions/dbtool, where "
    "bash-completion (2.9 or later) finds it next to PREFIX/bin/dbtool. To install it by hand: "
    "dbtool completion bash > ~/.local/share/bash-completion/completions/dbtool "
    '(or add `eval "$(dbtool completion bash)"` to ~/.bashrc).',
    "zsh": "pip install puts this script in PREFIX/share/zsh/site-functions/_dbtool. When that directory is not "
    "on $fpath: dbtool completion zsh > ~/.zfunc/_dbtool and, in ~/.zshrc before compinit, fpath=(~/.zfunc $fpath).",
    "fish": "pip install puts this script in PREFIX/share/fish/vendor_completions.d/dbtool.fish. To install it "
    "by hand: dbtool completion fish > ~/.config/fish/completions/dbtool.fish",
}


def completion_script(shell: str) -> str:
    """The completion script of a shell, exactly as completions/ holds it."""
    import typer
    from dbtool.core.commands import COMMANDS

    from .app import build_app
    from .docgen import COMPLETIONS, completion_scripts

    cli = typer.main.get_command(build_app(COMMANDS["completion"]))
    return completion_scripts(cli)[COMPLETIONS[shell]]


def completion(opts: object, *, shell: str) -> int:
    sys.stdout.write(completion_script(shell))
    sys.stdout.flush()
    if sys.stdout.isatty():
        print(f"# {INSTALL_HINTS[shell]}", file=sys.stderr)
    return 0


# -- dbtool help [COMMAND] ------------------------------------------------------------------


def help_command(opts: object, *, words: list[str] | None = None) -> int:
    """The help of a command (``dbtool help get-runs``), of a group, or of dbtool itself."""
    from dbtool.core.commands import COMMANDS

    from .app import GROUP_HELP, run_app
    from .binder import find_command
    from .output import error_line

    words = list(words or [])
    if not words:
        return run_app(["--help"], None)
    if words[0] in GROUP_HELP and len(words) == 1:
        return run_app([words[0], "--help"], None)
    cmd, rest = find_command(words)
    if cmd is None or rest:
        import difflib

        wanted = " ".join(words)
        names = [c.name for c in COMMANDS.values() if not c.hidden] + list(GROUP_HELP)
        close = difflib.get_close_matches(wanted, names, n=4, cutoff=0.6)
        close += [n for n in names if wanted in n and n not in close][: 4 - len(close)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(error_line(f"no command {wanted!r}{hint}", "dbtool"), file=sys.stderr)
        return 2
    return run_app([*cmd.name.split(" "), "--help"], cmd)
