"""The fast binder and the Typer app bind every command's arguments identically (property test)."""

from __future__ import annotations

import pytest
from dbtool.cli import dispatch
from dbtool.cli.app import build_app
from dbtool.cli.binder import GlobalOptions, bind, compact
from dbtool.core.commands import COMMANDS, LOCAL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

API_COMMANDS = sorted(name for name, cmd in COMMANDS.items() if cmd.kind != LOCAL and not cmd.hidden)

words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=","), min_size=1, max_size=12
).filter(lambda s: not s.startswith("-") and s.strip() == s and s)


def value_for(p) -> st.SearchStrategy[str]:
    if p.type == "int":
        return st.integers(-(10**6), 10**6).map(str)
    if p.type == "float":
        return st.floats(-1e6, 1e6, allow_nan=False).map(repr)
    if p.type == "list":
        return st.lists(words, min_size=1, max_size=3).map(",".join)
    if p.choices:
        return st.sampled_from(p.choices)
    return st.one_of(words, st.just(""), words.map(lambda w: w + " x"))


@st.composite
def invocation(draw, name: str):
    cmd = COMMANDS[name]
    options: list[list[str]] = []
    positionals: list[str] = []
    rest: list[str] = []
    for p in cmd.params:
        if not p.required and not draw(st.booleans()):
            continue
        if p.type == "argv":
            rest = draw(st.lists(words, min_size=1, max_size=3))
            continue
        if p.positional:
            # a negative number is a value on both paths (add-var cnt -3); other text starting with '-' is not
            numeric = p.type in ("int", "float")
            positionals.append(draw(value_for(p).filter(lambda v, n=numeric: v != "" and (n or not v.startswith("-")))))
            continue
        if p.type == "bool":
            options.append([p.option])
            continue
        for _ in range(draw(st.integers(1, 3)) if p.multiple else 1):
            value = draw(value_for(p))
            options.append([f"{p.option}={value}"] if draw(st.booleans()) else [p.option, value])
    globals_ = draw(
        st.lists(
            st.sampled_from(
                [
                    ["--json"],
                    ["--trace"],
                    ["--format", "csv"],
                    ["--area", "/a/b"],
                    ["--timeout=2.5"],
                    ["--field", "ci_job=4711"],
                    ["--field=note=a b"],
                    ["--project", "nightly"],
                    ["--fields", "id,testname"],
                    ["--no-header"],
                    ["--jq=.[0]"],
                ]
            ),
            max_size=3,
        )
    )
    options = draw(st.permutations(options)) if options else []
    split = draw(st.integers(0, len(globals_)))
    args = [w for g in globals_[:split] for w in g] + name.split()
    args += [w for o in options for w in o] + [w for g in globals_[split:] for w in g] + positionals + rest
    return args


def typer_binding(args: list[str]) -> tuple:
    captured = {}

    def fake_execute(cmd, params, opts):
        captured["result"] = (cmd.name, params, vars_of(opts))
        return 0

    original = dispatch.execute
    dispatch.execute = fake_execute
    try:
        app = build_app(COMMANDS[next(a for a in args if a in COMMANDS)])
        try:
            app(args=args, prog_name="dbtool", standalone_mode=True)
        except SystemExit as done:
            assert done.code == 0, args
    finally:
        dispatch.execute = original
    return captured["result"]


def vars_of(opts: GlobalOptions) -> dict:
    return {name: getattr(opts, name) for name in GlobalOptions.__slots__}


def fast_binding(args: list[str]) -> tuple | None:
    opts = GlobalOptions()
    from dbtool.cli.binder import take_global

    i = 0
    while args[i].startswith("--"):
        i = take_global(args, i, opts)
    cmd = COMMANDS[args[i]]
    params = bind(cmd, args[i + 1 :], opts)
    return None if params is None else (cmd.name, compact(cmd, params), vars_of(opts))


@pytest.mark.parametrize("name", API_COMMANDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fast_binder_matches_typer(name, data):
    args = data.draw(invocation(name))
    fast = fast_binding(args)
    assert fast is not None, f"the fast binder should take this valid invocation: {args}"
    assert fast == typer_binding(args)


@pytest.mark.parametrize(
    "args",
    [
        ["get-runs", "--help"],
        ["get-runs", "-h"],
        ["get-runs", "--bogus"],
        ["get-test-id", "--run-id", "1"],  # missing --testname
        ["get-test-id", "--run-id", "x", "--testname", "t"],
        ["get-tests-for-run", "--run-id", "1", "--mode", "weird"],
        ["get-tests-for-run", "--run-id", "1", "--not-in=yes"],
        ["set-var", "only-one-word"],
        ["set-var", "a", "b", "c"],
        ["get-runs", "--limit"],
    ],
)
def test_fast_binder_defers_everything_else_to_typer(args):
    cmd = COMMANDS[args[0]]
    assert bind(cmd, args[1:], GlobalOptions()) is None
