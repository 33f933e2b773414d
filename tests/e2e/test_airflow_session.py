"""devstack.demo's Airflow session: several `airflow` commands in one process (devstack.dagtest), each with
its own environment, output and exit status as a separate `airflow` call would give them."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_commands_share_one_process_and_take_each_commands_environment(tmp_path):
    from devstack.demo import AirflowRunner

    runner = AirflowRunner(home=tmp_path / "airflow", log_dir=tmp_path / "logs",
                           extra_env={"LIENTHONG_DATA_DIR": str(tmp_path / "data")})
    conn = '{"conn_type": "http", "host": "registry.invalid", "port": 8080}'
    with runner.session():
        runner.migrate()
        worker = runner._worker
        assert worker is not None and worker.proc is not None
        pid = worker.proc.pid

        runner.extra_env["AIRFLOW_CONN_SESSION_PROBE"] = conn
        found = runner.airflow("connections", "get", "session_probe", "-o", "json", log_name="probe-set")
        assert found.returncode == 0, found.stderr
        assert "registry.invalid" in found.stdout

        del runner.extra_env["AIRFLOW_CONN_SESSION_PROBE"]  # the next command's environment lacks it
        gone = runner.airflow("connections", "get", "session_probe", "-o", "json", log_name="probe-unset")
        assert gone.returncode != 0
        assert "registry.invalid" not in gone.stdout

        assert worker.proc is not None and worker.proc.pid == pid, "one Airflow process for every command"
        proc = worker.proc
    assert proc.poll() is not None, "the session's process ends with the session"
    assert (tmp_path / "logs" / "probe-set.log").read_text().count("registry.invalid") >= 1
    assert (tmp_path / "logs" / "airflow-db-migrate.log").exists()
