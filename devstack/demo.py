"""`make demo`: the whole walking skeleton on one machine, with nothing installed by hand.

Generates a synthetic province, starts the sandbox agency systems and an embedded warehouse PostgreSQL,
runs the DAGs `ingest_population` -> `integrate` -> `publish` through Airflow (`airflow dags test`, with a
private AIRFLOW_HOME), runs the chain a second time to show that an unchanged source publishes nothing new,
prints a summary (rows per zone, quarantine by reason, published versions, where files and reports are) and
stops everything it started.

Knobs (environment): LIENTHONG_DATA_DIR (default ./var/demo), LIENTHONG_DEMO_CITIZENS (default 5000),
LIENTHONG_DEMO_SEED.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lienthong.openlineage import openlineage_env
from lienthong.private_files import private_data_dir, private_umask
from lienthong.settings import Settings, load_settings

log = logging.getLogger("devstack.demo")
REPO = Path(__file__).resolve().parent.parent
CHAIN = ("ingest_population", "ingest_business", "ingest_land", "integrate", "publish", "audit_report")


@dataclass
class AirflowRunner:
    """Runs DAGs through the Airflow CLI with a private home, the repo's dags/ and the given connections."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    # The agencies' pseudonymization key, unless one is exported: a new one per runner (a demo's pseudonyms
    # are only stable within that demo). It goes to the task processes' environment, never to a file.
    pseudonym_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

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
        Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        # OpenLineage events of every task into <data_dir>/lineage/openlineage.jsonl (an exported config wins).
        data_dir = self.extra_env.get("LIENTHONG_DATA_DIR") or env.get("LIENTHONG_DATA_DIR") or load_settings().data_dir
        for key, value in openlineage_env(Path(data_dir).expanduser().resolve()).items():
            env.setdefault(key, value)
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, log_name: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [str(Path(sys.executable).parent / "airflow"), *args]
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if self.log_dir and log_name:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{log_name}.log").write_text(out.stdout + "\n--- stderr ---\n" + out.stderr)
        return out

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


def run_chain(runner: AirflowRunner, label: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for dag_id in CHAIN:
        t0 = time.monotonic()
        states[dag_id] = runner.dags_test(dag_id, log_name=f"{label}-{dag_id}")
        print(f"  {label}: {dag_id:<18} {states[dag_id]:<8} {time.monotonic() - t0:6.1f}s", flush=True)
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

    from lienthong.db import stop_embedded, warehouse_url
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    print(f"[1/4] generating a synthetic province: {citizens} citizens, seed {seed}", flush=True)
    sandbox_data = data_dir / "sandbox" / "data"
    gen = generate(GeneratorConfig(seed=seed, citizens=citizens), sandbox_data)
    print(f"      {json.dumps({k: v for k, v in gen.items() if k in ('counts', 'rows_per_second', 'seconds')}, default=str)[:300]}")

    print("[2/4] starting the sandbox agency systems and the embedded warehouse", flush=True)
    url = warehouse_url(settings)
    states: dict[str, dict[str, str]] = {}
    try:
        with run_sandbox(sandbox_data, data_dir / "sandbox" / "state") as endpoints:
            print(f"      population registry {endpoints.population_url}, business registry {endpoints.business_url}, "
                  f"land registries {sorted(endpoints.land_dsns)}")
            runner = AirflowRunner(home=data_dir / "airflow", extra_env=endpoints.airflow_conn_env(), log_dir=data_dir / "logs")
            runner.extra_env["LIENTHONG_DATA_DIR"] = str(data_dir)
            # The sandbox knows the truth: the audit report scores the run's links against it.
            runner.extra_env["LIENTHONG_GROUND_TRUTH_DIR"] = str(sandbox_data / "truth")
            if not settings.database_url:
                runner.extra_env["LIENTHONG_DATABASE_URL"] = url
            print("[3/4] running the pipelines through Airflow", flush=True)
            runner.migrate()
            states["first run"] = run_chain(runner, "first run")
            if all(v == "success" for v in states["first run"].values()):
                states["second run (no source change)"] = run_chain(runner, "second run")
        print("[4/4] summary", flush=True)
        summary = collect_summary(settings, url)
        summary["dag_states"] = states
        summary["seconds"] = round(time.monotonic() - t_start, 1)
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
