"""Rollback protection: older versions are refused unless pinned exactly."""

from __future__ import annotations

import pytest

from ig_gate.bundles.errors import PinError
from ig_gate.bundles.rollback import RollbackError, check_rollback


def test_newer_or_equal_version_passes():
    check_rollback("2.0.0", "1.9.9", None, "here")
    check_rollback("2.0.0", "2.0", None, "here")


def test_no_floor_accepts_anything():
    check_rollback(None, None, None, "here")
    check_rollback("0.1", None, None, "here")


def test_older_version_is_refused_as_a_pin_error_naming_both_versions():
    expected = r"here: bundle version 1\.0 is older than the last-good version 2\.0"
    with pytest.raises(RollbackError, match=expected):
        check_rollback("1.0", "2.0", None, "here")
    assert issubclass(RollbackError, PinError)


@pytest.mark.parametrize("spec", ["==1.0", ">=0.5,==1.0.0", "===1.0"])
def test_older_version_named_exactly_by_the_pin_passes(spec):
    check_rollback("1.0", "2.0", spec, "here")


@pytest.mark.parametrize("spec", [">=1.0", "==1.*", "~=1.0", "==1.0.1", "not a spec"])
def test_ranges_wildcards_and_other_versions_do_not_count_as_explicit(spec):
    with pytest.raises(RollbackError):
        check_rollback("1.0", "2.0", spec, "here")


def test_missing_or_unorderable_version_is_refused_once_a_floor_exists():
    with pytest.raises(RollbackError, match="no version"):
        check_rollback(None, "2.0", None, "here")
    with pytest.raises(RollbackError, match="cannot be ordered"):
        check_rollback("banana", "2.0", None, "here")
