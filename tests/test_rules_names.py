"""The one rule for names of tests, runs and target parts, shared by every family (B19)."""

from __future__ import annotations

import pytest
from dbtool.core.rules.names import bad_key_values, bad_run_name, bad_test_name


@pytest.mark.parametrize("name", ["unit", "a b", "x.y", "ü"])
def test_good_test_names(name):
    assert bad_test_name(name) is None


@pytest.mark.parametrize("name", ["", "a/b", "/", None, 5])
def test_bad_test_names(name):
    assert "must be non-empty text and contain no '/'" in bad_test_name(name)


def test_run_names_must_be_non_empty_text():
    assert bad_run_name("nightly") is None
    assert bad_run_name("a/b") is None  # Megatest allows it: a run name is not part of the target
    for bad in ("", None, 3):
        assert "must be non-empty text" in bad_run_name(bad)


def test_key_values_name_each_empty_key():
    keys = ["RELEASE", "PLATFORM"]
    assert bad_key_values(keys, ["v1", "linux"]) is None
    assert bad_key_values(keys, ["", ""]) == "leaves RELEASE and PLATFORM empty: give a value for every key"
    assert bad_key_values(keys, ["v1", ""]) == "leaves PLATFORM empty: give a value for every key"
    assert "PLATFORM must be text without '/'" in bad_key_values(keys, ["v1", "a/b"])
    assert bad_key_values(keys, ["v1", None]) is None  # a NULL key value (shown as -na-, reference A.17)
