"""`make demo`: the whole walking skeleton on one machine, with nothing installed by hand.

Generates a synthetic province, starts the sandbox agency systems and an embedded warehouse PostgreSQL,
runs the DAGs `ingest_population` -> `integrate` -> `publish` through Airflow (`airflow dags test`, with a
private AIRFLOW_HOME), runs the chain a second time to show that an unchanged source publishes nothing new,
prints a summary (rows per zone, quarantine by reason, published versions, where files and reports are) and
stops everything it started.

Everything the demo asks of Airflow runs in one Airflow process (`AirflowRunner.session`, `devstack.dagtest`):
a fresh process per `airflow dags test` spent most of the demo's time starting Airflow and importing the
tasks' libraries again. That process migrates Airflow's database and loads what the tasks import while the
province is generated and the sandbox starts. The seconds of each phase go to `summary.json` (`timings`);
docs/benchmarks.md ("make demo: where the time goes") has the split.

Knobs (environment): LIENTHONG_DATA_DIR (default ./var/demo), LIENTHONG_DEMO_CITIZENS (default 5000),
LIENTHONG_DEMO_SEED.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lienthong import releases
from lienthong.openlineage import openlineage_env
from lienthong.private_files import private_data_dir, private_umask
from lienthong.settings import Settings, load_settings

log = logging.getLogger("devstack.demo")
REPO = Path(__file__).resolve().parent.parent
CHAIN = ("ingest_population", "ingest_business", "ingest_land", "integrate", "publish", "audit_report")
# What the chain's tasks import when they first run, loaded in a session's Airflow process while the demo
# generates the province (`AirflowRunner.preload`): the Execution API app every task talks to, the connectors,
# DuckDB / Delta Lake, Great Expectations, Splink, the report's templates and plots.
PRELOAD = (
    "devstack.dagtest:warm_execution_api",
    "airflow.sdk.execution_time.task_runner",
    "lienthong.pipeline",
    "connectors.population.ingest",
    "connectors.business.ingest",
    "connectors.land.ingest",
    "duckdb",
    "deltalake",
    "lienthong.stagestep",
    "lienthong.staging",
    "lienthong.quality",
    "great_expectations",
    "lienthong.reconcile.run",
    "splink",
    "lienthong.publish",
    "lienthong.profiles",
    "lienthong.access",
    "lienthong.audit.render",
)


@dataclass
class AirflowRunner:
    """Runs DAGs through the Airflow CLI with a private home, the repo's dags/ and the given connections."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    # The agencies' pseudonymization key, unless one is exported: a new one per runner (a demo's pseudonyms
    # are only stable within that demo). It goes to the task processes' environment, never to a file.
    pseudonym_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    # the release signing key of the demo's published versions (an exported one wins)
    release_key: str = field(default_factory=lambda: releases.new_key()[0], repr=False)
    # The Airflow process of an open session (see session()), else None: each command in a process of its own.
    _worker: _Worker | None = field(default=None, init=False, repr=False)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "LIENTHONG_INGEST_SCHEDULE": "none",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
            }
        )
        env.setdefault("XDG_RUNTIME_DIR", str(self.home / "xdg"))
        env.setdefault("LIENTHONG_PSEUDONYM_KEY", self.pseudonym_key)
        env.setdefault(releases.SIGNING_KEY_ENV, self.release_key)
        Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        # OpenLineage events of every task into <data_dir>/lineage/openlineage.jsonl (an exported config wins).
        data_dir = self.extra_env.get("LIENTHONG_DATA_DIR") or env.get("LIENTHONG_DATA_DIR") or load_settings().data_dir
        for key, value in openlineage_env(Path(data_dir).expanduser().resolve()).items():
            env.setdefault(key, value)
        # The listener emits each event from a thread of the task's process instead of a fork of it. A fork
        # of a process that has used Delta Lake cannot read a Delta table (its tokio runtime panics: the
        # integrate tasks' COMPLETE events were lost), and in a session's long-lived process a fork costs
        # more and can hang on a lock another thread held (execution_timeout, 10 s, then killed).
        env.setdefault("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "True")
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, log_name: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """`airflow <args>`: in the open session's Airflow process if there is one, else in a new process."""
        if self._worker is not None:
            out = self._worker.run(list(args), self.env(), timeout=timeout)
        else:
            cmd = [str(Path(sys.executable).parent / "airflow"), *args]
            out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if self.log_dir and log_name:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{log_name}.log").write_text(out.stdout + "\n--- stderr ---\n" + out.stderr)
        return out

    @contextlib.contextmanager
    def session(self) -> Iterator[AirflowRunner]:
        """Run the `airflow` commands issued inside the block in one Airflow process (`devstack.dagtest`) rather
        than one process each: Airflow, the DAG files' and the tasks' imports are paid once. Output, logs and
        states are those of separate `airflow` calls. Reentrant: an inner block uses the open session."""
        if self._worker is not None:
            yield self
            return
        self._worker = _Worker(self.log_dir)
        try:
            yield self
        finally:
            worker, self._worker = self._worker, None
            worker.close()

    def preload(self, modules: tuple[str, ...] = PRELOAD) -> None:
        """In an open session, import `modules` in its Airflow process now rather than in the first task that
        needs them (outside a session: nothing to do). A module that fails to load is logged, not fatal."""
        if self._worker is None:
            return
        out = self._worker.preload(list(modules), self.env())
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "airflow-preload.log").write_text(out.stdout + "\n--- stderr ---\n" + out.stderr)
        if out.returncode != 0:
            log.warning("preloading the tasks' modules failed (the tasks import them when they run):\n%s",
                        out.stderr[-2000:])

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        out = self.airflow("db", "migrate", log_name="airflow-db-migrate")
        if out.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{out.stderr[-3000:]}")
        # One pool per source caps how many tasks hit an agency system at once.
        out = self.airflow("pools", "import", str(REPO / "config" / "airflow-pools.json"), log_name="airflow-pools")
        if out.returncode != 0:
            raise RuntimeError(f"airflow pools import failed:\n{out.stderr[-3000:]}")

    def dags_test(self, dag_id: str, log_name: str | None = None) -> str:
        """Run one DAG run in-process through Airflow; returns the run's final state."""
        out = self.airflow("dags", "test", dag_id, log_name=log_name or dag_id)
        match = re.search(rf"DagRun Finished: dag_id={re.escape(dag_id)},.*?\bstate=(\w+)", out.stdout + out.stderr)
        state = match.group(1) if match else "failed"
        return state if out.returncode == 0 else "failed"


# Read when used, not when Airflow starts: a session's process takes them from each command (devstack.dagtest).
COMMAND_ENV_PREFIXES = ("AIRFLOW_CONN_", "LIENTHONG_")


def _start_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(COMMAND_ENV_PREFIXES)}


class _Worker:
    """The Airflow process of a session: `python -m devstack.dagtest`, started on the first command and
    restarted if a later command needs another Airflow environment (home, config, paths), or if it died.
    Each command carries its whole environment; connections and `LIENTHONG_*` settings may change between
    commands in one process."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] | None = None
        self._stderr: IO[Any] | None = None

    def _start(self, env: dict[str, str]) -> subprocess.Popen[str]:
        self.close()
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._stderr = (self.log_dir / "airflow-session.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "devstack.dagtest"], env=env, text=True, bufsize=1,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr or subprocess.DEVNULL)
        self.env = _start_env(env)
        return self.proc

    def run(self, args: list[str], env: dict[str, str], *, timeout: float) -> subprocess.CompletedProcess:
        """`airflow <args>` in the worker; output and exit status as a subprocess.run would give them."""
        return self._send({"args": args}, env, timeout=timeout, name=["airflow", *args])

    def preload(self, modules: list[str], env: dict[str, str], *, timeout: float = 600) -> subprocess.CompletedProcess:
        """Import `modules` (`module:function` calls it) in the worker, ahead of the commands that need them."""
        return self._send({"preload": modules}, env, timeout=timeout, name=["preload", *modules])

    def _send(self, command: dict[str, Any], env: dict[str, str], *, timeout: float,
              name: list[str]) -> subprocess.CompletedProcess:
        reuse = self.proc is not None and self.proc.poll() is None and self.env == _start_env(env)
        proc = self.proc if reuse and self.proc is not None else self._start(env)
        assert proc.stdin is not None and proc.stdout is not None
        with tempfile.TemporaryDirectory(prefix="airflow-cmd-") as tmp:
            out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
            command = {**command, "stdout": str(out_path), "stderr": str(err_path), "env": env}
            try:
                proc.stdin.write(json.dumps(command) + "\n")
                proc.stdin.flush()
                answer = _read_line(proc.stdout, timeout)
            except OSError:  # it died between two commands
                answer = ""
            if answer:
                code = int(json.loads(answer)["returncode"])
            else:  # timed out or died: this process is not reused
                self.close(kill=True)
                code = proc.returncode if proc.returncode else -9
            stdout = out_path.read_text(errors="replace") if out_path.exists() else ""
            stderr = err_path.read_text(errors="replace") if err_path.exists() else ""
        return subprocess.CompletedProcess(name, code, stdout, stderr)

    def close(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if kill:
                proc.kill()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or '' at its end or after `timeout` seconds."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


def run_chain(runner: AirflowRunner, label: str, timings: dict[str, float] | None = None) -> dict[str, str]:
    """Run the DAGs of `CHAIN` in order (one Airflow process for all, see `AirflowRunner.session`), printing
    each one's state and time; stops at the first that does not succeed."""
    states: dict[str, str] = {}
    with runner.session():
        for dag_id in CHAIN:
            t0 = time.monotonic()
            states[dag_id] = runner.dags_test(dag_id, log_name=f"{label}-{dag_id}")
            seconds = time.monotonic() - t0
            if timings is not None:
                timings[f"{label}: {dag_id}"] = round(seconds, 1)
            print(f"  {label}: {dag_id:<18} {states[dag_id]:<8} {seconds:6.1f}s", flush=True)
            if states[dag_id] != "success":
                break
    return states


def collect_summary(settings: Settings, url: str) -> dict[str, Any]:
    """Rows per zone, quarantine by reason, publications, and where things are — from the warehouse."""
    from lienthong import runs
    from lienthong.db import connect
    from lienthong.findings import ensure_findings_schema, findings_summary

    out: dict[str, Any] = {"data_dir": str(settings.data_dir)}
    with connect(url) as conn:
        out["ingest"] = runs.ingest_totals(conn)
        out["staging"] = [
            {"dataset": st.dataset, "run_id": st.run_id, "raw_rows": st.raw_rows,
             "duplicates_removed": st.duplicates_removed, "rows_in": st.rows_in, "rows_staged": st.rows_staged,
             "rows_quarantined": st.rows_quarantined, "conservation_ok": st.conservation_ok,
             "quarantine_by_rule": dict(st.quarantine_by_rule), "repairs": dict(st.repairs),
             "findings": dict(st.findings)}
            for st in runs.latest_stage_runs(conn)
        ]
        out["publications"] = [
            {"dataset": p.dataset, "version": p.version, "rows": p.row_count, "status": p.status, "table": p.table_name,
             "parquet_path": p.parquet_path, "run_id": p.run_id}
            for p in runs.publications(conn)
        ]
        out["quality"] = [
            {"dataset": q.dataset, "gate_passed": q.gate_passed, "failed_critical": q.failed_critical,
             "failed_warning": q.failed_warning}
            for q in runs.latest_quality_runs(conn)
        ]
        rec = runs.latest_reconcile_run(conn)
        out["reconcile"] = None if rec is None else {"run_id": rec.run_id, "counts": rec.counts,
                                                     "links": (rec.metrics or {}).get("links")}
        ensure_findings_schema(conn)
        out["findings"] = findings_summary(conn)
    return out


def print_summary(s: dict[str, Any], settings: Settings) -> None:
    print("\n=== Summary ===")
    print("Raw zone (landed rows, all runs):")
    for r in s["ingest"]:
        print(f"  {r['source']:<22} runs {r['runs']:>3}  rows {r['rows_landed']:>9}  watermark {r['watermark']}")
    print("Staged / quarantine (latest integration):")
    for r in s["staging"]:
        ok = "ok" if r["conservation_ok"] else "VIOLATED"
        print(
            f"  {r['dataset']:<22} raw {r['raw_rows']:>8}  dedup -{r['duplicates_removed']:<7} in {r['rows_in']:>8} = "
            f"staged {r['rows_staged']:>8} + quarantined {r['rows_quarantined']:>6}  conservation {ok}"
        )
        for rule, n in sorted(r["quarantine_by_rule"].items(), key=lambda kv: -kv[1]):
            print(f"      quarantined {n:>6}  {rule}")
        repaired = sum(r["repairs"].values())
        if repaired:
            top = ", ".join(f"{k} {v}" for k, v in sorted(r["repairs"].items(), key=lambda kv: -kv[1])[:4])
            print(f"      repaired    {repaired:>6}  ({top}{', ...' if len(r['repairs']) > 4 else ''})")
        if r["findings"]:
            top = ", ".join(f"{k} {v}" for k, v in sorted(r["findings"].items(), key=lambda kv: -kv[1])[:3])
            print(f"      findings    {sum(r['findings'].values()):>6}  ({top}{', ...' if len(r['findings']) > 3 else ''})")
    print("Quality gate:")
    for q in s["quality"]:
        print(f"  {q['dataset']:<22} {'passed' if q['gate_passed'] else 'FAILED'}  critical failures {q['failed_critical']}, warnings {q['failed_warning']}")
    if s.get("reconcile"):
        rec = s["reconcile"]
        print(f"Reconciliation (run {rec['run_id']}):")
        for name, counts in (rec["links"] or {}).items():
            if name == "model_seconds":
                continue
            nonzero = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k not in ("left", "right"))
            print(f"  {name:<24} {nonzero}")
        rows = {k: v for k, v in rec["counts"].items() if k != "findings"}
        print("  integrated rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        open_by_type: dict[str, int] = {}
        for f in s["findings"]:
            if f["status"] == "open":
                open_by_type[f["type"]] = open_by_type.get(f["type"], 0) + f["count"]
        print("  open findings: " + ", ".join(f"{k} {v}" for k, v in sorted(open_by_type.items(), key=lambda kv: -kv[1])))
    print("Published versions:")
    for p in s["publications"]:
        print(f"  {p['dataset']:<22} v{p['version']:06d} {p['status']:<9} rows {p['rows']:>8}  table published.{p['table']}")
    print("Where things are:")
    for name in ("raw_dir", "staged_dir", "quarantine_dir", "integrated_dir", "published_dir", "reports_dir"):
        print(f"  {name:<15} {getattr(settings, name)}")
    print(f"  data docs       {settings.reports_dir / 'data_docs' / 'index.html'}")
    for report in sorted((settings.reports_dir / "audit").glob("*/report.html"))[-1:]:
        print(f"  audit report    {report}")
    print(f"  airflow logs    {settings.data_dir / 'logs'}")
    print(f"  summary JSON    {settings.data_dir / 'summary.json'}")


@private_umask()  # inherited by the Airflow and sandbox processes it starts: all of it 0700/0600
def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("LIENTHONG_DATA_DIR", str(REPO / "var" / "demo"))
    settings = load_settings()
    data_dir = private_data_dir(settings)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "xdg"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    citizens = int(os.environ.get("LIENTHONG_DEMO_CITIZENS", "5000"))
    seed = int(os.environ.get("LIENTHONG_DEMO_SEED", "20261120"))
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            timings[name] = round(time.monotonic() - t0, 1)

    from concurrent.futures import ThreadPoolExecutor

    from lienthong.db import stop_embedded, warehouse_url
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    sandbox_data = data_dir / "sandbox" / "data"
    runner = AirflowRunner(home=data_dir / "airflow", log_dir=data_dir / "logs", extra_env={
        "LIENTHONG_DATA_DIR": str(data_dir),
        # The sandbox knows the truth: the audit report scores the run's links against it.
        "LIENTHONG_GROUND_TRUTH_DIR": str(sandbox_data / "truth"),
    })

    def warm_up() -> None:
        # Airflow's metadata database and the tasks' imports need neither the province nor the sandbox.
        with phase("airflow start + db migrate + pools (beside generation)"):
            runner.migrate()
        with phase("airflow preload task modules (beside generation)"):
            runner.preload()

    states: dict[str, dict[str, str]] = {}
    try:
        # One Airflow process for everything Airflow does here: both passes of the chain (see session()).
        with runner.session(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="airflow-warm-up") as background:
            warming = background.submit(warm_up)
            print(f"[1/4] generating a synthetic province: {citizens} citizens, seed {seed}", flush=True)
            with phase("generate province"):
                gen = generate(GeneratorConfig(seed=seed, citizens=citizens), sandbox_data)
            print(f"      {json.dumps({k: v for k, v in gen.items() if k in ('counts', 'rows_per_second', 'seconds')}, default=str)[:300]}")

            print("[2/4] starting the sandbox agency systems and the embedded warehouse", flush=True)
            with phase("start warehouse"):
                url = warehouse_url(settings)
            t_sandbox = time.monotonic()
            with run_sandbox(sandbox_data, data_dir / "sandbox" / "state") as endpoints:
                timings["start sandbox"] = round(time.monotonic() - t_sandbox, 1)
                print(f"      population registry {endpoints.population_url}, business registry {endpoints.business_url}, "
                      f"land registries {sorted(endpoints.land_dsns)}")
                print("[3/4] running the pipelines through Airflow", flush=True)
                with phase("wait for the airflow warm-up"):
                    warming.result()
                runner.extra_env.update(endpoints.airflow_conn_env())
                if not settings.database_url:
                    runner.extra_env["LIENTHONG_DATABASE_URL"] = url
                states["first run"] = run_chain(runner, "first run", timings)
                if all(v == "success" for v in states["first run"].values()):
                    states["second run (no source change)"] = run_chain(runner, "second run", timings)
                t_stop = time.monotonic()
            timings["stop sandbox"] = round(time.monotonic() - t_stop, 1)
        print("[4/4] summary", flush=True)
        with phase("summary"):
            summary = collect_summary(settings, url)
        summary["dag_states"] = states
        summary["seconds"] = round(time.monotonic() - t_start, 1)
        summary["timings"] = timings
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str, ensure_ascii=False))
        print_summary(summary, settings)
    finally:
        if not settings.database_url:
            stop_embedded(settings.embedded_pgdata)
    ok = all(state == "success" for run in states.values() for state in run.values()) and len(states) == 2
    print(f"\nDemo {'succeeded' if ok else 'FAILED (see the logs above)'} in {time.monotonic() - t_start:.0f}s.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
