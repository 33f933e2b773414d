"""The lookup service's start-up checks without a server: the pools of all workers against the server's free
connections and each agency role's limit (the error names the settings to change), the server settings that
would log the IDs looked up, and out-of-range tunables."""

from __future__ import annotations

import dataclasses

import pytest

from lienthong.settings import Settings, load_settings
from lienthong.singlewindow.config import ServiceConfig
from lienthong.singlewindow.pools import (
    PoolPlan,
    ServerRoom,
    StartupError,
    check_room,
    parameter_logging_risks,
)

ROLES = {f"agency_{i}": f"role_{i}" for i in range(5)}
ROOM = ServerRoom(max_connections=100, reserved=3, in_use=10, role_limits={})


def test_the_pools_of_every_worker_are_counted_together():
    plan = PoolPlan(workers=3, roles=ROLES, pool_size=4, log_pool_size=4, headroom=5)
    assert plan.per_worker == 24 and plan.total == 72
    check_room(plan, ROOM)  # 72 <= 100 - 3 - 10 - 5


def test_a_plan_that_does_not_fit_names_the_settings_to_change():
    plan = PoolPlan(workers=3, roles=ROLES, pool_size=8, log_pool_size=8, headroom=5)  # 3 x 48 = 144
    with pytest.raises(StartupError, match=r"may open 144 connections \(3 worker\(s\) x \(5 agencies x "
                                           r"LIENTHONG_SINGLEWINDOW_POOL_SIZE=8 \+ LIENTHONG_SINGLEWINDOW_LOG_POOL_SIZE=8"
                                           r"\)\) but the server has 82 to spare"):
        check_room(plan, ROOM)


def test_connections_in_use_and_the_headroom_are_left_free():
    plan = PoolPlan(workers=1, roles=ROLES, pool_size=4, log_pool_size=4, headroom=0)  # 24
    check_room(plan, ServerRoom(100, 3, 73, {}))
    with pytest.raises(StartupError, match="74 in use"):
        check_room(plan, ServerRoom(100, 3, 74, {}))
    with pytest.raises(StartupError, match="LIENTHONG_SINGLEWINDOW_DB_HEADROOM=1"):
        check_room(PoolPlan(1, ROLES, 4, 4, headroom=1), ServerRoom(100, 3, 73, {}))


def test_an_agency_roles_connection_limit_is_respected():
    plan = PoolPlan(workers=3, roles=ROLES, pool_size=4, log_pool_size=4, headroom=0)
    check_room(plan, ServerRoom(1000, 3, 0, {"role_1": 12, "role_2": -1}))
    with pytest.raises(StartupError, match=r"agency agency_1: 3 worker\(s\) x LIENTHONG_SINGLEWINDOW_POOL_SIZE=4 "
                                           r"connections exceed role role_1's connection limit of 11"):
        check_room(plan, ServerRoom(1000, 3, 0, {"role_1": 11}))


DEFAULTS = {"log_statement": "none", "log_min_duration_statement": "-1", "log_min_duration_sample": "-1",
            "log_statement_sample_rate": "1", "log_transaction_sample_rate": "0", "log_parameter_max_length": "-1",
            "log_parameter_max_length_on_error": "0"}


def test_the_server_defaults_log_no_parameter_values():
    assert parameter_logging_risks(DEFAULTS) == []
    assert parameter_logging_risks({**DEFAULTS, "log_statement": "ddl"}) == []


@pytest.mark.parametrize(("changed", "named"), [
    ({"log_statement": "all"}, "log_statement = all"),
    ({"log_statement": "mod"}, "log_statement = mod"),
    ({"log_min_duration_statement": "0"}, "log_min_duration_statement = 0"),
    ({"log_min_duration_sample": "100"}, "log_min_duration_sample = 100"),
    ({"log_transaction_sample_rate": "0.01"}, "log_transaction_sample_rate = 0.01"),
])
def test_statement_logging_with_parameters_is_named(changed, named):
    (risk,) = parameter_logging_risks({**DEFAULTS, **changed})
    assert named in risk and "set log_parameter_max_length = 0" in risk
    assert parameter_logging_risks({**DEFAULTS, **changed, "log_parameter_max_length": "0"}) == []


def test_parameters_logged_on_error_are_named():
    (risk,) = parameter_logging_risks({**DEFAULTS, "log_parameter_max_length_on_error": "-1"})
    assert "log_parameter_max_length_on_error = -1" in risk


def test_the_defaults_come_from_the_settings(monkeypatch):
    for name in ("POOL_SIZE", "LOG_POOL_SIZE", "LOG_TIMEOUT", "AUTH_FAILURES"):
        monkeypatch.delenv(f"LIENTHONG_SINGLEWINDOW_{name}", raising=False)
    declared = {f.name.removeprefix("singlewindow_"): f.default for f in dataclasses.fields(Settings)
                if f.name.startswith("singlewindow_")}
    assert dataclasses.asdict(ServiceConfig.from_settings(load_settings())) == declared
    monkeypatch.setenv("LIENTHONG_SINGLEWINDOW_POOL_SIZE", "2")
    monkeypatch.setenv("LIENTHONG_SINGLEWINDOW_LOG_TIMEOUT", "0.5")
    config = ServiceConfig.from_settings(load_settings())
    assert (config.pool_size, config.log_timeout) == (2, 0.5)
    assert ServiceConfig.from_settings(load_settings(), pool_size=6).pool_size == 6


@pytest.mark.parametrize(("name", "value", "message"), [
    ("POOL_SIZE", "0", "LIENTHONG_SINGLEWINDOW_POOL_SIZE must be at least 1"),
    ("LOG_POOL_SIZE", "0", "LIENTHONG_SINGLEWINDOW_LOG_POOL_SIZE must be at least 1"),
    ("DB_HEADROOM", "-1", "LIENTHONG_SINGLEWINDOW_DB_HEADROOM must be at least 0"),
    ("LOG_TIMEOUT", "0", "LIENTHONG_SINGLEWINDOW_LOG_TIMEOUT must be a positive number"),
    ("AUTH_BACKOFF", "-1", "LIENTHONG_SINGLEWINDOW_AUTH_BACKOFF must be a positive number"),
])
def test_an_out_of_range_setting_is_refused_by_name(monkeypatch, name, value, message):
    monkeypatch.setenv(f"LIENTHONG_SINGLEWINDOW_{name}", value)
    with pytest.raises(StartupError, match=message):
        ServiceConfig.from_settings(load_settings())
