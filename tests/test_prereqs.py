"""get-prereqs-not-met (reference C.9, algorithm B): every rule, mode, itemmap form and refusal.

Test states are written with the real commands. Writing an item creates and rolls up its
toplevel, so cases that need a particular toplevel state set it afterwards without roll-up.
"""

from __future__ import annotations

import re

import pytest
from conftest import put
from dbtool.core.errors import Refused
from dbtool.core.rules.prereqs import parse_itemmap
from dbtool.core.rules.vocab import BADLY_ENDED_STATES, ENDED_STATES

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)

OK_STATUSES = ("PASS", "WARN", "CHECK", "WAIVED", "SKIP")


@pytest.fixture
def run_id(hdb) -> int:
    return hdb("register-run", target="v1/linux", runname="nightly")


def force_toplevel(hdb, run_id: int, testname: str, state: str, status: str) -> int:
    """Give a toplevel a state/status regardless of its items (no roll-up)."""
    test_id = hdb("get-test-id", run_id=run_id, testname=testname)
    hdb("test-set-state-status", test_id=test_id, state=state, status=status)
    return test_id


def prereqs(hdb, run_id: int, waitons: str, ref: str = "r", item: str = "", mode: str = "normal", itemmap=()):
    return hdb(
        "get-prereqs-not-met",
        run_id=run_id,
        waitons=waitons.split(",") if waitons else [],
        ref_testname=ref,
        ref_item_path=item,
        mode=mode.split(","),
        itemmap=list(itemmap),
    )


def blocking(records: list[dict]) -> list[tuple]:
    """(testname, item_path, state, status) per record; a never-seen waiton shows as (name, None, None, None)."""
    return [(r["testname"], r["item_path"], r["state"], r["status"]) for r in records]


def snapshot(hdb) -> tuple[list, list]:
    return hdb.sql("select * from tests order by id"), hdb.sql("select seq from events order by seq")


# -- outcomes in normal mode --------------------------------------------------------------------------


def test_no_waitons_means_all_met(hdb, run_id):
    assert prereqs(hdb, run_id, "") == []


def test_never_seen_waiton_is_its_name_record(hdb, run_id):
    assert prereqs(hdb, run_id, "w") == [
        {"id": None, "run_id": run_id, "testname": "w", "item_path": None, "state": None, "status": None}
    ]


def test_blocking_row_is_a_short_record(hdb, run_id):
    w = put(hdb, run_id, "w", state="RUNNING", status="n/a")
    assert prereqs(hdb, run_id, "w") == [
        {"id": w, "run_id": run_id, "testname": "w", "item_path": "", "state": "RUNNING", "status": "n/a"}
    ]


@pytest.mark.parametrize("status", OK_STATUSES)
def test_rule1_completed_ok_toplevel_meets(hdb, run_id, status):
    put(hdb, run_id, "w", status=status)
    assert prereqs(hdb, run_id, "w") == []


@pytest.mark.parametrize("status", ["FAIL", "n/a", "ABORT", "PREQ_FAIL", "DEAD"])
def test_completed_but_not_ok_blocks_in_normal_mode(hdb, run_id, status):
    put(hdb, run_id, "w", status=status)
    assert blocking(prereqs(hdb, run_id, "w")) == [("w", "", "COMPLETED", status)]


@pytest.mark.parametrize("state", ["NOT_STARTED", "LAUNCHED", "REMOTEHOSTSTART", "RUNNING", "DEAD", "UNKNOWN"])
def test_not_ended_toplevel_blocks_even_with_an_ok_status(hdb, run_id, state):
    put(hdb, run_id, "w", state=state, status="PASS")
    assert blocking(prereqs(hdb, run_id, "w")) == [("w", "", state, "PASS")]


@pytest.mark.parametrize("state", sorted(ENDED_STATES))
def test_completed_means_any_ended_state(hdb, run_id, state):
    """B counts every ended state as completed: an ARCHIVED or STUCK PASS toplevel meets normal mode."""
    put(hdb, run_id, "w", state=state, status="PASS")
    assert prereqs(hdb, run_id, "w") == []


def test_unmet_iterated_waiton_lists_all_its_rows(hdb, run_id):
    put(hdb, run_id, "w", "b")
    put(hdb, run_id, "w", "a")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert blocking(prereqs(hdb, run_id, "w")) == [
        ("w", "", "RUNNING", "n/a"),
        ("w", "a", "COMPLETED", "PASS"),
        ("w", "b", "COMPLETED", "PASS"),
    ]


def test_met_toplevel_hides_bad_items_from_a_toplevel_waiter(hdb, run_id):
    put(hdb, run_id, "w", "a", state="COMPLETED", status="FAIL")
    force_toplevel(hdb, run_id, "w", "COMPLETED", "PASS")
    assert prereqs(hdb, run_id, "w") == []


def test_each_waiton_is_judged_on_its_own(hdb, run_id):
    put(hdb, run_id, "a")
    put(hdb, run_id, "b", state="RUNNING", status="n/a")
    assert blocking(prereqs(hdb, run_id, "a,b,c")) == [("b", "", "RUNNING", "n/a"), ("c", None, None, None)]


def test_rows_of_other_runs_do_not_count(hdb, run_id):
    other = hdb("register-run", target="v1/linux", runname="other")
    put(hdb, other, "w")
    assert blocking(prereqs(hdb, run_id, "w")) == [("w", None, None, None)]


def test_a_run_with_no_rows_blocks_on_each_waiton_by_name(hdb):
    # run 99 does not exist: it simply has no rows, as Megatest answers
    assert prereqs(hdb, 99, "w,v") == [
        {"id": None, "run_id": 99, "testname": name, "item_path": None, "state": None, "status": None}
        for name in ("w", "v")
    ]
    assert prereqs(hdb, 99, "") == []


# -- toplevel mode and badly-ended waitons -----------------------------------------------------------


@pytest.mark.parametrize("status", ["FAIL", "n/a", "ABORT"])
def test_toplevel_mode_accepts_any_status_of_a_completed_toplevel(hdb, run_id, status):
    put(hdb, run_id, "w", status=status)
    assert prereqs(hdb, run_id, "w", mode="toplevel") == []
    assert prereqs(hdb, run_id, "w", mode="normal,toplevel") == []


@pytest.mark.parametrize("state", sorted(BADLY_ENDED_STATES))
def test_badly_ended_toplevel_blocks_normal_but_meets_toplevel_mode(hdb, run_id, state):
    """KILLED, KILLREQ, STUCK and INCOMPLETE are ended (rule 1); DEAD is only badly ended (rule 2)."""
    put(hdb, run_id, "w", state=state, status="FAIL")
    assert blocking(prereqs(hdb, run_id, "w")) == [("w", "", state, "FAIL")]
    assert prereqs(hdb, run_id, "w", mode="toplevel") == []


@pytest.mark.parametrize("state", ["NOT_STARTED", "LAUNCHED", "RUNNING", "UNKNOWN"])
def test_toplevel_mode_still_waits_for_an_unfinished_toplevel(hdb, run_id, state):
    put(hdb, run_id, "w", state=state, status="n/a")
    assert blocking(prereqs(hdb, run_id, "w", mode="toplevel")) == [("w", "", state, "n/a")]


def test_killed_toplevel_of_iterated_waiton_meets_toplevel_mode(hdb, run_id):
    put(hdb, run_id, "w", "a", state="KILLED", status="n/a")
    put(hdb, run_id, "w", "b", state="RUNNING", status="n/a")
    force_toplevel(hdb, run_id, "w", "KILLED", "FAIL")
    assert prereqs(hdb, run_id, "w", mode="toplevel") == []
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w")] == ["", "a", "b"]


# -- itemized modes, waiting test is an item (rule 3, 4, 5) ----------------------------------------------


@pytest.mark.parametrize("mode", ["itemwait", "itemmap", "itemmatch"])
def test_rule3_same_item_done_meets_whatever_the_toplevel(hdb, run_id, mode):
    put(hdb, run_id, "w", "a")
    put(hdb, run_id, "w", "b", state="RUNNING", status="n/a")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert prereqs(hdb, run_id, "w", item="a", mode=mode) == []


@pytest.mark.parametrize("mode", ["itemwait", "itemmap", "itemmatch"])
def test_rule3_unmet_item_blocks_even_when_the_toplevel_is_met(hdb, run_id, mode):
    put(hdb, run_id, "w", "a", state="RUNNING", status="n/a")
    put(hdb, run_id, "w", "b")
    force_toplevel(hdb, run_id, "w", "COMPLETED", "PASS")
    assert blocking(prereqs(hdb, run_id, "w", item="a", mode=mode)) == [("w", "a", "RUNNING", "n/a")]
    # without an itemized mode the toplevel decides (rule 1)
    assert prereqs(hdb, run_id, "w", item="a") == []


def test_rule3_failed_item_is_unmet_unless_toplevel_mode(hdb, run_id):
    put(hdb, run_id, "w", "a", state="COMPLETED", status="FAIL")
    assert blocking(prereqs(hdb, run_id, "w", item="a", mode="itemwait")) == [("w", "a", "COMPLETED", "FAIL")]
    assert prereqs(hdb, run_id, "w", item="a", mode="itemwait,toplevel") == []


def test_rule3_killed_item_is_done_in_toplevel_mode_but_a_dead_one_is_not(hdb, run_id):
    put(hdb, run_id, "w", "a", state="KILLED", status="FAIL")
    put(hdb, run_id, "w", "b", state="DEAD", status="FAIL")
    assert prereqs(hdb, run_id, "w", item="a", mode="itemwait,toplevel") == []
    assert blocking(prereqs(hdb, run_id, "w", item="b", mode="itemwait,toplevel")) == [("w", "b", "DEAD", "FAIL")]


def test_missing_item_itemwait_waits_for_the_toplevel_itemmatch_takes_any_good_item(hdb, run_id):
    """Rule 4: under itemmatch any finished good item of W will do when the waiting item has no match."""
    put(hdb, run_id, "w", "b")
    put(hdb, run_id, "w", "c", state="RUNNING", status="n/a")
    top = force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w", item="a", mode="itemwait")] == ["", "b", "c"]
    assert prereqs(hdb, run_id, "w", item="a", mode="itemmatch") == []
    hdb("test-set-state-status", test_id=top, state="COMPLETED", status="PASS")
    assert prereqs(hdb, run_id, "w", item="a", mode="itemwait") == []


def test_rule5_same_item_done_meets_in_normal_mode_too(hdb, run_id):
    put(hdb, run_id, "w", "a")
    put(hdb, run_id, "w", "b", state="RUNNING", status="n/a")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert prereqs(hdb, run_id, "w", item="a") == []
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w", item="b")] == ["", "a", "b"]


def test_rule5_needs_an_ok_status(hdb, run_id):
    put(hdb, run_id, "w", "a", state="COMPLETED", status="FAIL")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w", item="a")] == ["", "a"]


# -- itemized modes, waiting test is a toplevel (rule 0) ---------------------------------------------------


@pytest.mark.parametrize("mode", ["itemwait", "itemmatch"])
def test_rule0_any_completed_item_meets_an_itemized_toplevel_waiter(hdb, run_id, mode):
    put(hdb, run_id, "w", "a", state="COMPLETED", status="FAIL")
    put(hdb, run_id, "w", "b", state="RUNNING", status="n/a")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert prereqs(hdb, run_id, "w", mode=mode) == []
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w")] == ["", "a", "b"]


def test_rule0_needs_a_completed_item(hdb, run_id):
    put(hdb, run_id, "w", "a", state="RUNNING", status="n/a")
    assert [r["item_path"] for r in prereqs(hdb, run_id, "w", mode="itemwait")] == ["", "a"]


# -- itemmaps ---------------------------------------------------------------------------------------------


def test_itemmap_maps_the_waiting_item_to_the_waitons_item(hdb, run_id):
    """Megatest's manual example: item foo-x/bar waits for the waiton's item y/bar."""
    put(hdb, run_id, "w", "y/bar")
    put(hdb, run_id, "w", "foo-x/bar", state="RUNNING", status="n/a")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    assert prereqs(hdb, run_id, "w", item="foo-x/bar", mode="itemwait", itemmap=["w=.*x/ y/"]) == []
    unmapped = prereqs(hdb, run_id, "w", item="foo-x/bar", mode="itemwait")
    assert blocking(unmapped) == [("w", "foo-x/bar", "RUNNING", "n/a")]


def test_itemmap_lines_apply_in_order_with_backrefs(hdb, run_id):
    put(hdb, run_id, "w", "321fooa123p")
    put(hdb, run_id, "w", "a123b321", state="RUNNING", status="n/a")
    spec = "w=(a\\d+)(b\\d+) \\2foo\\1\nb(.*) \\1p"
    assert prereqs(hdb, run_id, "w", item="a123b321", mode="itemwait", itemmap=[spec]) == []


def test_itemmap_line_without_replacement_deletes_the_match(hdb, run_id):
    put(hdb, run_id, "w", "baz")
    put(hdb, run_id, "w", "foo/bar/baz", state="RUNNING", status="n/a")
    assert prereqs(hdb, run_id, "w", item="foo/bar/baz", mode="itemwait", itemmap=["w=.*/"]) == []


def test_itemmap_to_empty_path_makes_the_toplevel_the_item_waited_for(hdb, run_id):
    put(hdb, run_id, "w", "x", state="COMPLETED", status="FAIL")
    force_toplevel(hdb, run_id, "w", "RUNNING", "n/a")
    result = prereqs(hdb, run_id, "w", item="sch/cell1", mode="itemwait", itemmap=["w=.*"])
    assert blocking(result) == [("w", "", "RUNNING", "n/a")]


def test_first_matching_itemmap_is_the_waitons_map(hdb, run_id):
    for waiton in ("v", "w"):
        put(hdb, run_id, waiton, "b-1")
        put(hdb, run_id, waiton, "c-1")
        put(hdb, run_id, waiton, "a-1", state="RUNNING", status="n/a")
    maps = ["w=a b", "%=a c", "w=a a"]
    # w is mapped a-1 → b-1 (first entry), v falls to the catch-all: a-1 → c-1
    assert prereqs(hdb, run_id, "v,w", item="a-1", mode="itemwait", itemmap=maps) == []
    hdb(
        "test-set-state-status",
        test_id=hdb("get-test-id", run_id=run_id, testname="w", item_path="b-1"),
        state="RUNNING",
    )
    assert blocking(prereqs(hdb, run_id, "v,w", item="a-1", mode="itemwait", itemmap=maps)) == [
        ("w", "b-1", "RUNNING", "PASS")
    ]


def test_itemmap_of_another_waiton_does_not_apply(hdb, run_id):
    put(hdb, run_id, "w", "b")
    put(hdb, run_id, "w", "a", state="RUNNING", status="n/a")
    result = prereqs(hdb, run_id, "w", item="a", mode="itemwait", itemmap=["other=a b"])
    assert blocking(result) == [("w", "a", "RUNNING", "n/a")]


def test_empty_map_is_the_identity_and_shadows_later_maps(hdb, run_id):
    put(hdb, run_id, "w", "a")
    put(hdb, run_id, "w", "b", state="RUNNING", status="n/a")
    assert prereqs(hdb, run_id, "w", item="a", mode="itemwait", itemmap=["w=", "%=a b"]) == []
    assert blocking(prereqs(hdb, run_id, "w", item="a", mode="itemwait", itemmap=["%=a b"])) == [
        ("w", "b", "RUNNING", "n/a")
    ]


@pytest.mark.parametrize(
    ("spec", "item_path", "mapped"),
    [
        ("t=d a\ne b\nf c", "d/e/f", "a/b/c"),  # several lines, in order
        ("t=x y", "x/x", "y/x"),  # the first match only
        ("t=.*/", "foo/bar/baz", "baz"),  # no replacement → ""
        ("t=foo(\\d+)/ num-\\1/bar/", "foo23/thud", "num-23/bar/thud"),  # backreference
        ("t=(?P<n>\\d+) <\\g<n>>", "a12b34", "a<12>b34"),  # named group
        ("t=^([^/]+)/([^/]+)$ \\2/\\1", "a/b", "b/a"),
        ("t=zzz q", "a/b", "a/b"),  # no match: unchanged
        ("t=\r\n  a  b  \r\n\r\nb c\n", "a", "c"),  # CRLF, blank lines and extra spaces are tolerated
        ("t=", "a/b", "a/b"),  # the empty map
    ],
)
def test_itemmap_application(spec, item_path, mapped):
    assert parse_itemmap(spec).apply(item_path) == mapped


# -- exclusive --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["LAUNCHED", "REMOTEHOSTSTART", "RUNNING"])
def test_exclusive_lists_the_waiting_test_running_in_any_run(hdb, run_id, state):
    put(hdb, run_id, "w")
    other = hdb("register-run", target="v2/mac", runname="other")
    r = put(hdb, other, "r", state=state, status="n/a")
    assert prereqs(hdb, run_id, "w") == []
    assert prereqs(hdb, run_id, "w", mode="exclusive") == [
        {"id": r, "run_id": other, "testname": "r", "item_path": "", "state": state, "status": "n/a"}
    ]


@pytest.mark.parametrize("state", ["NOT_STARTED", "COMPLETED", "KILLED", "STARTED", "DELETED"])
def test_exclusive_ignores_instances_that_are_not_launched_or_running(hdb, run_id, state):
    other = hdb("register-run", target="v2/mac", runname="other")
    put(hdb, other, "r", state=state, status="n/a")
    assert prereqs(hdb, run_id, "", mode="exclusive") == []


def test_exclusive_item_matches_that_item_toplevel_matches_any(hdb, run_id):
    other = hdb("register-run", target="v2/mac", runname="other")
    b = put(hdb, other, "r", "b", state="RUNNING", status="n/a")
    top = hdb("get-test-id", run_id=other, testname="r")
    assert prereqs(hdb, run_id, "", item="a", mode="exclusive") == []
    assert [x["id"] for x in prereqs(hdb, run_id, "", item="b", mode="exclusive")] == [b]
    assert [x["id"] for x in prereqs(hdb, run_id, "", mode="exclusive")] == [top, b]  # toplevel first


def test_exclusive_records_come_first_then_waitons(hdb, run_id):
    r = put(hdb, run_id, "r", state="RUNNING", status="n/a")
    result = prereqs(hdb, run_id, "w", mode="exclusive,toplevel")
    assert [(x["id"], x["testname"]) for x in result] == [(r, "r"), (None, "w")]


# -- de-duplication ---------------------------------------------------------------------------------------


def test_repeated_waitons_are_listed_once(hdb, run_id):
    put(hdb, run_id, "w", state="RUNNING", status="n/a")
    assert blocking(prereqs(hdb, run_id, "w,x,w,x")) == [("w", "", "RUNNING", "n/a"), ("x", None, None, None)]


def test_row_both_running_elsewhere_and_blocking_is_listed_once(hdb, run_id):
    r = put(hdb, run_id, "r", state="RUNNING", status="n/a")
    assert [x["id"] for x in prereqs(hdb, run_id, "r", mode="exclusive")] == [r]


# -- soft-deleted rows ----------------------------------------------------------------------------------


def test_deleted_waiton_is_never_seen(hdb, run_id):
    w = put(hdb, run_id, "w")
    hdb("delete-test-records", test_id=w)
    assert blocking(prereqs(hdb, run_id, "w")) == [("w", None, None, None)]


def test_deleted_item_is_as_if_never_registered(hdb, run_id):
    a = put(hdb, run_id, "w", "a", state="RUNNING", status="n/a")
    put(hdb, run_id, "w", "b")
    force_toplevel(hdb, run_id, "w", "COMPLETED", "PASS")
    assert blocking(prereqs(hdb, run_id, "w", item="a", mode="itemwait")) == [("w", "a", "RUNNING", "n/a")]
    hdb("delete-test-records", test_id=a)
    assert prereqs(hdb, run_id, "w", item="a", mode="itemwait") == []


# -- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": ["itemwiat"]}, "unknown mode 'itemwiat'"),
        ({"mode": ["normal", "Toplevel"]}, "unknown mode 'Toplevel'"),
        ({"itemmap": ["w .* x"]}, "is not TESTPATT=MAP"),
        ({"itemmap": ["=.* x"]}, "is not TESTPATT=MAP"),
        ({"itemmap": ["w/a=.* x"]}, "without '/'"),
        ({"itemmap": ["w=a b c"]}, "has 3 words"),
        ({"itemmap": ["w=a(b c"]}, "not a valid regular expression"),
        ({"itemmap": ["w=(a) \\2"]}, "invalid group reference"),
        ({"itemmap": ["w=(a) \\g<x>"]}, "unknown group name"),
        ({"itemmap": ["w=a \\d"]}, "bad escape"),
        ({"ref_testname": "r/a"}, "invalid --ref-testname"),
        ({"ref_testname": ""}, "invalid --ref-testname"),
        ({"waitons": ["w/a"]}, "invalid waiton 'w/a'"),
    ],
)
def test_malformed_requests_are_refused_and_change_nothing(hdb, run_id, params, message):
    put(hdb, run_id, "w", state="RUNNING", status="n/a")
    before = snapshot(hdb)
    request = {"run_id": run_id, "waitons": ["w"], "ref_testname": "r", **params}
    with pytest.raises(Refused, match=re.escape(message)):
        hdb("get-prereqs-not-met", **request)
    assert snapshot(hdb) == before


def test_refusal_comes_before_the_run_lookup(hdb):
    with pytest.raises(Refused, match="unknown mode"):
        prereqs(hdb, 99, "w", mode="bogus")


# -- the command line -----------------------------------------------------------------------------------


def cli_put(area, run_id: str, testname: str, state: str, status: str, item_path: str = "") -> int:
    args = ["--run-id", run_id, "--testname", testname, "--item-path", item_path, "--state", state, "--status", status]
    return int(area.ok("set-state-status-and-roll-up-items", *args).out)


def cli_prereqs(area, run_id: str, *args: str) -> list[dict]:
    return area.ok("get-prereqs-not-met", "--run-id", run_id, *args, "--json").json


def test_cli_lists_blockers_as_json_then_nothing_once_met(area):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "nightly").out.strip()
    cli_put(area, run_id, "a", "COMPLETED", "PASS")
    b = cli_put(area, run_id, "b", "RUNNING", "n/a")
    ask = ("--waitons", "a,b", "--ref-testname", "c")
    assert cli_prereqs(area, run_id, *ask) == [
        {"id": b, "run_id": int(run_id), "testname": "b", "item_path": "", "state": "RUNNING", "status": "n/a"}
    ]
    assert cli_prereqs(area, run_id, "--waitons", "x", "--ref-testname", "c", "--mode", "toplevel") == [
        {"id": None, "run_id": int(run_id), "testname": "x", "item_path": None, "state": None, "status": None}
    ]
    cli_put(area, run_id, "b", "COMPLETED", "WARN")
    assert cli_prereqs(area, run_id, *ask) == []


def test_cli_itemmap_lines_are_separated_by_newlines(area):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "nightly").out.strip()
    cli_put(area, run_id, "gen", "COMPLETED", "PASS", item_path="cell1")
    cli_put(area, run_id, "gen", "RUNNING", "n/a", item_path="sch")
    ask = ("--waitons", "gen", "--ref-testname", "sim", "--ref-item-path", "sch/cell1", "--mode", "itemwait")
    # sch/cell1 → cell1/sch → cell1: the second line applies to the first one's result
    assert cli_prereqs(area, run_id, *ask, "--itemmap", "gen=^(\\w+)/(\\w+)$ \\2/\\1\n/.*") == []
    only_second = cli_prereqs(area, run_id, *ask, "--itemmap", "gen=/.*")
    assert [(r["item_path"], r["state"]) for r in only_second] == [("sch", "RUNNING")]


def test_cli_refuses_an_unknown_mode_with_exit_4(area):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "nightly").out.strip()
    args = ("--run-id", run_id, "--waitons", "a", "--ref-testname", "c", "--mode", "normal,soon")
    result = area.run("get-prereqs-not-met", *args)
    assert result.code == 4, result
    assert "unknown mode 'soon'" in result.err
    assert result.out == ""
    assert area.ok("get-tests-for-run", "--run-id", run_id, "--json").json == []
