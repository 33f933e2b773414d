"""The case workflow's rules without a warehouse: which action leads where from which state, the deadlines and
their setting."""

from __future__ import annotations

import pytest

from lienthong import cases
from lienthong.findings import SEVERITIES, TAXONOMY


def test_every_action_leads_to_an_open_state_from_open_states_only():
    for action, (allowed, to_state) in cases.ACTIONS.items():
        assert to_state in cases.CASE_STATES and to_state not in cases.CLOSED_STATES, action
        assert allowed <= set(cases.CASE_STATES), action
        assert not allowed & set(cases.CLOSED_STATES), action  # a closed case is reopened by a run only
        assert to_state not in allowed, action  # no action repeats itself
    # the claim of correction is never re-claimed without a run in between
    assert "corrected" not in {s for allowed, _ in cases.ACTIONS.values() for s in allowed}


def test_deadlines_by_type_then_severity_then_default():
    assert cases.deadline_days("shares_do_not_sum_to_100", "high") == cases.DEFAULT_DEADLINES["high"]
    assert cases.deadline_days("shares_do_not_sum_to_100", "high", {"high": 3}) == 3
    assert cases.deadline_days("shares_do_not_sum_to_100", "high", {"high": 3, "shares_do_not_sum_to_100": 9}) == 9
    assert set(cases.DEFAULT_DEADLINES) == set(SEVERITIES)


def test_the_deadline_setting_is_checked_and_names_the_variable_and_key():
    assert cases.parse_deadlines(None) == {} and cases.parse_deadlines(" ") == {}
    assert cases.parse_deadlines('{"critical": 2, "duplicate_records": 45}') == {"critical": 2,
                                                                                 "duplicate_records": 45}
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES.*'urgent'"):
        cases.parse_deadlines('{"urgent": 2}')
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES.*'high'"):
        cases.parse_deadlines('{"high": 0}')
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES.*'high'"):
        cases.parse_deadlines('{"high": "7"}')
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES is not valid JSON"):
        cases.parse_deadlines("{high: 7}")
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES"):
        cases.parse_deadlines("[1]")


def test_the_setting_is_read_with_the_others(monkeypatch):
    from lienthong.settings import load_settings

    monkeypatch.setenv("LIENTHONG_FINDING_DEADLINES", '{"medium": 10}')
    assert dict(load_settings().finding_deadlines) == {"medium": 10}
    monkeypatch.setenv("LIENTHONG_FINDING_DEADLINES", '{"medium": -1}')
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES: 'medium'"):
        load_settings()
    with pytest.raises(ValueError, match="LIENTHONG_FINDING_DEADLINES: unknown key 'nope'"):
        cases.check_deadlines({"nope": 10})


def test_every_type_has_a_deadline():
    for code, t in TAXONOMY.items():
        assert cases.deadline_days(code, t.severity) >= 1
