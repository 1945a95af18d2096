"""Progress on stderr (cli/progress.py): rate and time on a terminal, nothing when stderr is piped."""

from __future__ import annotations

import re

from conftest import dbtool_argv, run_in_pty


def _test_id(area) -> str:
    run = area.ok("register-run", "--target", "v1/linux", "--runname", "p").out.strip()
    return (
        area.ok("register-test", "--run-id", run, "--testname", "t").out.strip()
        or area.ok("get-test-id", "--run-id", run, "--testname", "t").out.strip()
    )


def test_bulk_upload_shows_rate_and_time_on_a_terminal_only(area, tmp_path):
    test_id = _test_id(area)
    path = tmp_path / "big.csv"
    path.write_text("".join(f"cat,v{i},{i},1,0\n" for i in range(15_000)))
    code, text = run_in_pty(
        dbtool_argv("--area", str(area.root), "csv-to-test-data", "--test-id", test_id, "--file", str(path))
    )
    assert code == 0, text
    assert "15000/15000 rows" in text, text
    assert re.search(r"[\d,]+ rows/s", text), text  # a rate
    assert re.search(r"\d+:\d\d:\d\d", text), text  # a time
    piped = area.ok("csv-to-test-data", "--test-id", test_id, "--file", str(path))
    assert piped.err == "" and "/s" not in piped.out


def test_migrate_shows_its_phases_on_a_terminal(area):
    from conftest import drop_pg_schema, new_pg_schema, pg_area_url, require_pg

    require_pg()
    schema = new_pg_schema()
    try:
        code, text = run_in_pty(dbtool_argv("--area", str(area.root), "migrate", "--to", pg_area_url(schema)))
        assert code == 0, text
        assert "migrate:" in text and re.search(r"\d+:\d\d:\d\d", text), text
    finally:
        drop_pg_schema(schema)
