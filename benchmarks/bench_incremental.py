"""Three pipeline runs in one benchmark: a full one, one after 1 % of the source records changed, and one with
no source change at all; every stage compared, per task its peak RSS, per run the disk it added (issue 18).

    .venv/bin/python benchmarks/bench_incremental.py --citizens 100000 [--changed 0.01] [--result PATH]

On a generated province (`benchmarks/.work/data-N`, reused when `run_all.py` / `bench_connectors.py` left one
there, else generated with the same settings: enterprise ratio 0.075, parcel ratio 1.0), with the sandbox up
for the whole benchmark:

1. full run: ingest all three sources (population API, business API, every province's land registry), stage
   and validate the six datasets, reconcile. The pipeline functions the DAGs call (`lienthong.pipeline`),
   into a fresh data folder `benchmarks/.work/incr-N` (own raw zone, own warehouse, so no watermark from
   another benchmark);
2. change `--changed` of the source records in each system, as an edit in the agency system would: the
   population and business APIs' `POST /_sandbox/touch` (the record's update time becomes one second after
   the newest the registry holds), `sandbox.land_db.touch_land` on each province's three tables (update time = now);
3. change run: the same steps; ingestion starts from the watermarks the full run left, staging merges the
   landings not staged yet into the Delta tables, validation checks the changed rows, reconciliation runs
   when a staged version changed;
4. no-change run: the same steps again with nothing changed at the sources. Whatever the connectors fetch
   again at their inclusive boundaries (below) lands again and staging finds it unchanged.

After the reconciliation, each run publishes the three datasets built from the integrated zone
(`publish_<ds>`, as the publish DAG does): the full run builds and publishes every row; a later run builds
only the rows of the driving keys the change in its input tables reaches, and publishes those whose digests
moved since the last version (`lienthong.profilechange`).

Each step (each ingestion, each `stage_<ds>`, each `validate_<ds>`, reconcile, each `publish_<ds>`) is a child process of its own,
as an Airflow task is: its peak RSS (VmHWM) is the task's. The stage summary goes to the validate child in a
temporary JSON file, as the DAG's XCom; validation is skipped when staging changed nothing (`mode` none: no
new landing; unchanged: new landings whose records were all staged already), as the DAG skips it.
Reconcile runs in every run (the DAG skips it when every validation was skipped) and may answer `unchanged`.
Per run, the Delta commits it made (files and bytes added and removed, a MERGE's rows copied and time). Per step: `seconds` (the step's function; the modules it imports are loaded
before the clock starts, `import_s`), `cpu_s` (its CPU seconds, every thread of the process), `process_s`
(the child's wall time: interpreter, imports, step, exit). The machine's load average is recorded around each
run: on a shared machine the wall times move with other work, CPU seconds much less.

Records, per stage, the seconds of the three runs and the ratios change/full and no-change/full (on the
steps' seconds and on the processes' wall time); per task its peak RSS; per run the bytes it added under each
zone of the data dir (raw, staged, quarantine, integrated; a du-style walk before and after the run), and
the issue's targets as booleans: change run <= 0.05 of the full run for staging and validation, no-change
run <= 0.02 of a full run, peak RSS <= 4 GiB per task. Per source, rows fetched by the change run against the
records changed, and the rows a correct incremental walk must fetch besides them: the records at the
watermark's own instant (population: `updated_since` is inclusive), on the watermark's day (business: `tuNgay`
has day granularity), or inside the land connector's 15-minute overlap window before the watermark; and
what the no-change run fetched again.

Writes benchmarks/results/incremental.json (or `--result`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results" / "incremental.json"
DATASETS = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")
LAND_TABLES = ("thua_dat", "chu_su_dung", "giay_chung_nhan")
# staging modes after which the integrate DAG skips the dataset's validation (dags/integrate.py)
SKIP_VALIDATE_MODES = ("none", "unchanged")
STAGES = ("ingest_population", "ingest_business", "ingest_land", "stage", "validate", "reconcile", "publish")
# the datasets built from the integrated zone, published after each reconciliation (the publish DAG's tasks)
PUBLISHED = ("citizen_profile", "enterprise_profile", "parcel_register")


def _log(msg: str) -> None:
    print(f"[incremental] {msg}", file=sys.stderr, flush=True)




# ---- child: one pipeline step ---------------------------------------------------------------------------
# The modules each step's function imports when it runs: imported before the clock starts, so a step's
# `seconds` is its work and `import_s` the imports a fresh task process pays first.
PRELOAD = {
    "ingest_population": ("connectors.population.ingest",),
    "ingest_business": ("connectors.business.ingest",),
    "ingest_land": ("connectors.land.ingest",),
    "stage": ("lienthong.stagestep", "lienthong.staging", "lienthong.zones", "deltalake", "duckdb"),
    "validate": ("lienthong.stagestep", "lienthong.staging", "lienthong.quality", "lienthong.zones",
                 "great_expectations"),
    "reconcile": ("lienthong.reconcile.run", "lienthong.reconcile.people", "lienthong.reconcile.integrate",
                  "lienthong.reconcile.dedupe", "lienthong.reconcile.sources", "lienthong.reconcile.organisations",
                  "lienthong.reconcile.explain", "lienthong.findings", "lienthong.runs.latest"),
    "publish": ("lienthong.publish", "lienthong.profiles", "lienthong.profilechange", "lienthong.pubtables",
                "lienthong.feed", "lienthong.feeddelta", "lienthong.releases", "lienthong.runs.latest", "deltalake",
                "duckdb"),
}


def _rows(reference: str | None) -> int | None:
    """Rows of a staged or quarantine table version (None when there is none)."""
    from lienthong import zones

    return int(zones.dataset(reference).count_rows()) if reference else None


def step_child(kind: str, run_id: str, arg: str | None, summary_file: Path | None) -> dict:
    """One pipeline step (the function the DAG task calls) in this process, timed; this process's peak RSS is
    the task's."""
    import importlib

    t0 = time.monotonic()
    from lienthong import pipeline

    for module in PRELOAD[kind]:
        importlib.import_module(module)
    import_s = time.monotonic() - t0
    out: dict = {}
    c0, t0 = time.process_time(), time.monotonic()
    if kind == "ingest_population":
        r = pipeline.ingest_population(run_id)
    elif kind == "ingest_business":
        r = pipeline.ingest_business(run_id)
    elif kind == "ingest_land":
        r = pipeline.ingest_land(run_id, arg)
    elif kind == "stage":
        r = pipeline.stage(arg, run_id)
    elif kind == "validate":
        r = pipeline.validate(arg, run_id, json.loads(summary_file.read_text()))
    elif kind == "publish":
        r = pipeline.publish(arg, run_id)
    else:
        r = pipeline.reconcile(run_id)
    seconds, cpu_s = time.monotonic() - t0, time.process_time() - c0
    out.update(seconds=round(seconds, 3), cpu_s=round(cpu_s, 3), import_s=round(import_s, 3), peak_rss_mib=rss_mib())
    if kind in ("ingest_population", "ingest_business"):
        # walk_s: the connector's own walk (watermark to landing commit), without client set-up
        out.update(rows=r["rows"], pages=r["pages"], requests=r.get("requests"), walk_s=r.get("seconds"),
                   watermark_from=r.get("watermark_from"), watermark_to=r.get("watermark_to"))
    elif kind == "ingest_land":
        out.update(rows=r["rows"], walk_s=r.get("seconds"),
                   tables={t: {"rows": v["rows"], "read_from": v["read_from"], "watermark_to": v["watermark_to"]}
                           for t, v in r["tables"].items()})
    elif kind == "stage":
        out["summary"] = r  # handed to the validate step, as the DAG's XCom
        out.update({k: r.get(k) for k in ("mode", "raw_rows", "rows_in", "rows_staged", "rows_quarantined",
                                          "rows_unchanged", "deleted", "conservation_ok", "staged_path",
                                          "quarantine_path")})
        # after the clock and the peak: the whole tables' rows at the versions this run left
        out.update(staged_table_rows=_rows(r.get("staged_path")), quarantine_table_rows=_rows(r.get("quarantine_path")))
    elif kind == "validate":
        out.update(gate_passed=r["gate_passed"], moved_to_quarantine=r.get("moved_to_quarantine") or {})
    elif kind == "publish":
        out.update({k: r.get(k) for k in ("status", "version", "rows", "changes", "built")})
        out["publish_s"] = round(r["seconds"], 3)  # publish() itself; `seconds` minus this is the build
    else:
        out.update(unchanged=bool(r.get("unchanged")), since=r.get("since"),
                   rows={n: o["rows"] for n, o in (r.get("outputs") or {}).items()}, parts_s=r.get("seconds") or {})
    return out


# ---- parent: the sandbox, the changes, the comparison -----------------------------------------------------
def _changes(keys: list[str], touched: set[str], at_boundary: list[bool], boundary: str) -> dict:
    """What an incremental run should fetch from one registry: the touched rows, plus the untouched rows the
    inclusive watermark returns again (`at_boundary`)."""
    return {"records_touched": len(touched),
            "rows_changed": sum(1 for k in keys if k in touched),
            "boundary_rows": sum(1 for k, b in zip(keys, at_boundary, strict=True) if b and k not in touched),
            "boundary": boundary}


def _touch(base_url: str, ids: list[str]) -> set[str]:
    """Update `ids` through a sandbox server's `/_sandbox/touch`; the ids it says it touched."""
    import requests

    resp = requests.post(base_url + "/_sandbox/touch", json={"ids": ids}, timeout=60)
    resp.raise_for_status()
    return set(resp.json()["touched"])


def _pick(values: list, fraction: float) -> list:
    """`fraction` of the distinct values, evenly spread over their sorted order (deterministic)."""
    distinct = sorted(set(v for v in values if v is not None))
    n = max(1, round(len(distinct) * fraction))
    step = len(distinct) / n
    return [distinct[int(i * step)] for i in range(n)]


def _change_sources(data: Path, ep, fraction: float, now: datetime) -> dict:
    """Touch `fraction` of each system's records; return, per source, the rows changed and the rows a
    correct incremental walk fetches besides them (its inclusive boundary), both counted on the source."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from connectors.business.client import parse_update_time
    from connectors.land.ingest import DEFAULT_OVERLAP
    from sandbox.land_db import touch_land

    out: dict[str, dict] = {}
    # population: the touched records move to one second after the registry's newest update; the walk from
    # the watermark (inclusive) also returns the records at the watermark's own instant
    cit = pq.read_table(data / "population" / "citizens.parquet", columns=["soDinhDanh", "capNhatLuc"])
    touched = _touch(ep.population_url, _pick(cit["soDinhDanh"].to_pylist(), fraction))
    stamps = [datetime.fromisoformat(s) for s in cit["capNhatLuc"].to_pylist()]
    newest = max(stamps)
    keys = cit["soDinhDanh"].to_pylist()
    out["population"] = _changes(keys, touched, [s == newest for s in stamps],
                                 f"rows already at the newest update time {newest.isoformat()} (updated_since is inclusive)")
    _log(f"population: touched {len(touched)} citizens ({out['population']['rows_changed']} rows)")
    # business: the same, but the walk filter is a local date: the watermark's whole day comes again
    ent = pq.read_table(data / "business" / "enterprises.parquet", columns=["MaSoDN", "NgayCapNhat"])
    touched = _touch(ep.business_url, _pick(ent["MaSoDN"].to_pylist(), fraction))
    local_days = [s.split(" ")[0] for s in ent["NgayCapNhat"].to_pylist()]
    newest_day = max(local_days, key=lambda d: parse_update_time(d + " 00:00:00"))
    keys = ent["MaSoDN"].to_pylist()
    out["business"] = _changes(keys, touched, [d == newest_day for d in local_days],
                               f"rows updated on the newest day {newest_day} (tuNgay has day granularity)")
    _log(f"business: touched {len(touched)} enterprises ({out['business']['rows_changed']} rows)")
    # land: an edit now, in each province's three tables; the connector re-reads a 15-minute overlap
    for province, dsn in sorted(ep.land_admin_dsns.items()):
        for table in LAND_TABLES:
            t = pq.read_table(data / "land" / province / f"{table}.parquet", columns=["id", "cap_nhat_luc"])
            chosen = _pick(t["id"].to_pylist(), fraction)
            changed = touch_land(dsn, table, chosen, now)
            chosen_set = set(chosen)
            newest = pc.max(t["cap_nhat_luc"]).as_py()
            window = newest - DEFAULT_OVERLAP
            boundary = sum(1 for i, s in zip(t["id"].to_pylist(), t["cap_nhat_luc"].to_pylist(), strict=True)
                           if s >= window and i not in chosen_set)
            out[f"land/{province}/{table}"] = {
                "records_touched": changed, "rows_changed": changed, "boundary_rows": boundary,
                "boundary": f"rows updated in the {int(DEFAULT_OVERLAP.total_seconds() // 60)} min overlap before the watermark"}
        _log(f"land {province}: touched {', '.join(str(out[f'land/{province}/{t}']['rows_changed']) for t in LAND_TABLES)} rows")
    return out


ZONES = ("raw", "staged", "quarantine", "integrated")
GIB = 1024 ** 3
RSS_TARGET_MIB = 4 * 1024  # issue 18: peak RSS <= 4 GiB per task
CHANGE_TARGET = 0.05  # a 1 % change run <= 0.05 of the full run, for staging and validation
NO_CHANGE_TARGET = 0.02  # a no-change run <= 0.02 of a full run


def _disk(data_dir: Path) -> dict[str, dict[str, int]]:
    """Bytes under each top-level folder of the run's data dir, du-style: allocated blocks (`disk`) and file
    sizes (`apparent`), each inode counted once."""
    out: dict[str, dict[str, int]] = {}
    seen: set[tuple[int, int]] = set()
    for top in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        disk = apparent = files = 0
        for root, _dirs, names in os.walk(top):
            for name in names:
                try:
                    st = os.lstat(os.path.join(root, name))
                except FileNotFoundError:  # a file the warehouse removed while we walked
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                disk += st.st_blocks * 512
                apparent += st.st_size
                files += 1
        out[top.name] = {"disk": disk, "apparent": apparent, "files": files}
    return out


def _disk_added(before: dict, after: dict) -> dict:
    added = {}
    for zone in sorted(set(before) | set(after)):
        b, a = before.get(zone, {}), after.get(zone, {})
        added[zone] = {k: a.get(k, 0) - b.get(k, 0) for k in ("disk", "apparent", "files")}
    added["zones_total"] = {k: sum(added.get(z, {}).get(k, 0) for z in ZONES) for k in ("disk", "apparent", "files")}
    return added


def _run_step(kind: str, run_id: str, env: dict, arg: str | None = None, summary: dict | None = None) -> dict:
    """One step in a child process of its own; its result, with `process_s` (the child's wall time from
    start to exit: interpreter, imports, the step, exit)."""
    cmd = [sys.executable, __file__, "--step", kind, "--run-id", run_id] + (["--arg", arg] if arg else [])
    with tempfile.TemporaryDirectory(prefix="bench-incr-") as tmp:
        if summary is not None:
            summary_file = Path(tmp) / "stage-summary.json"
            summary_file.write_text(json.dumps(summary))
            cmd += ["--summary-file", str(summary_file)]
        t0 = time.monotonic()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
        process_s = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"step {kind}{' ' + arg if arg else ''} of run {run_id} failed (exit {out.returncode})")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_s"] = round(process_s, 3)
    return r


def _commits(data_dir: Path, run_id: str) -> dict[str, list[dict]]:
    """The Delta commits run `run_id` made, per `<zone>/<table>`, read from the tables' logs: operation, the
    platform's mode, files and bytes added and removed, and delta-rs' own metrics (a MERGE's rows copied to
    rewrite the files it touched, its execution time)."""
    out: dict[str, list[dict]] = {}
    for zone in ("staged", "quarantine", "integrated"):
        for log_dir in sorted((data_dir / zone).glob("*/_delta_log")):
            for entry in sorted(log_dir.glob("*.json")):
                info: dict = {}
                added = removed = added_bytes = removed_bytes = 0
                for line in entry.read_text().splitlines():
                    action = json.loads(line) if line.strip() else {}
                    if "commitInfo" in action:
                        info = action["commitInfo"]
                    elif "add" in action:
                        added, added_bytes = added + 1, added_bytes + (action["add"].get("size") or 0)
                    elif "remove" in action:
                        removed, removed_bytes = removed + 1, removed_bytes + (action["remove"].get("size") or 0)
                if info.get("lienthong.run_id") != run_id:
                    continue
                m = info.get("operationMetrics") or {}
                out.setdefault(f"{zone}/{log_dir.parent.name}", []).append({
                    "version": int(entry.stem), "operation": info.get("operation"), "mode": info.get("lienthong.mode"),
                    "files_added": added, "bytes_added": added_bytes, "files_removed": removed,
                    "bytes_removed": removed_bytes,
                    **{k: m[k] for k in ("num_source_rows", "num_target_rows_inserted", "num_target_rows_updated",
                                         "num_target_rows_deleted", "num_target_rows_copied", "execution_time_ms",
                                         "scan_time_ms", "rewrite_time_ms") if k in m}})
    return out


def _code() -> dict:
    """The commit of the code the steps import (the repo `lienthong` comes from) and whether it had local edits."""
    import lienthong

    root = Path(lienthong.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "lienthong", "connectors", "sandbox", "schemas", "dags")
    return {"root": str(root), "commit": commit or os.environ.get("BENCH_CODE_COMMIT"),
            "platform_files_modified": None if dirty is None else bool(dirty)}


def _run(label: str, provinces: list[str], env: dict, data_dir: Path) -> dict:
    """One pipeline run as the integrate DAG runs it after the three ingestions, each task a process of its own:
    validate is skipped when staging changed nothing (`mode` none or unchanged), as the DAG skips it."""
    run_id = f"bench-incr-{label}-{time.time_ns()}"
    _log(f"{label} run: start ({run_id})")
    before = _disk(data_dir)
    load_before = os.getloadavg()  # the machine is shared: the 1-, 5- and 15-minute load when the run started
    t_run = time.monotonic()
    steps: dict[str, dict] = {}
    for source in ("population", "business"):
        s = steps[f"ingest_{source}"] = _run_step(f"ingest_{source}", run_id, env)
        _log(f"{label}: ingest_{source} {s['rows']} rows, {s['pages']} pages in {s['seconds']:.1f} s "
             f"(cpu {s['cpu_s']:.1f} s, process {s['process_s']:.1f} s, peak {s['peak_rss_mib']:.0f} MiB)")
    for province in provinces:
        s = steps[f"ingest_land_{province}"] = _run_step("ingest_land", run_id, env, province)
        _log(f"{label}: ingest_land {province} {s['rows']} rows in {s['seconds']:.1f} s "
             f"(cpu {s['cpu_s']:.1f} s, process {s['process_s']:.1f} s, peak {s['peak_rss_mib']:.0f} MiB)")
    for ds in DATASETS:
        s = steps[f"stage_{ds}"] = _run_step("stage", run_id, env, ds)
        summary = s.pop("summary")
        _log(f"{label}: stage_{ds} {s['mode']}: in {s['rows_in']}, staged {s['rows_staged']}, quarantined "
             f"{s['rows_quarantined']}, unchanged {s['rows_unchanged']} (raw {s['raw_rows']}) in {s['seconds']:.1f} s "
             f"(cpu {s['cpu_s']:.1f} s, process {s['process_s']:.1f} s, peak {s['peak_rss_mib']:.0f} MiB)")
        if s["mode"] in SKIP_VALIDATE_MODES:
            steps[f"validate_{ds}"] = {"skipped": True, "seconds": 0.0, "cpu_s": 0.0, "import_s": 0.0,
                                       "process_s": 0.0, "peak_rss_mib": None}
            _log(f"{label}: validate_{ds} skipped (staging mode {s['mode']}: the staged table is unchanged)")
            continue
        v = steps[f"validate_{ds}"] = _run_step("validate", run_id, env, ds, summary)
        _log(f"{label}: validate_{ds} in {v['seconds']:.1f} s (gate {'passed' if v['gate_passed'] else 'FAILED'}; "
             f"cpu {v['cpu_s']:.1f} s, process {v['process_s']:.1f} s, peak {v['peak_rss_mib']:.0f} MiB)")
    # The DAG's reconcile runs when at least one validation ran (none_failed_min_one_success); it runs here in
    # every run, so a no-change run also pays its check of the staged versions.
    dag_runs_reconcile = any(not steps[f"validate_{ds}"].get("skipped") for ds in DATASETS)
    s = steps["reconcile"] = _run_step("reconcile", run_id, env)
    s["dag_would_run"] = dag_runs_reconcile
    _log(f"{label}: reconcile {'unchanged' if s['unchanged'] else 'ran'} in {s['seconds']:.1f} s "
         f"(cpu {s['cpu_s']:.1f} s, process {s['process_s']:.1f} s, peak {s['peak_rss_mib']:.0f} MiB)")
    # The publish DAG's tasks for the datasets built from the integrated zone (run here in every run too)
    for ds in PUBLISHED:
        s = steps[f"publish_{ds}"] = _run_step("publish", run_id, env, ds)
        built = s["built"]
        _log(f"{label}: publish_{ds} {s['status']} v{s['version']} ({s['rows']} rows; built {built['form']}"
             + (f", {built['touched_keys']} keys touched of {built['built_rows']} rows built"
                if built["form"] == "touched" else "")
             + f") in {s['seconds']:.1f} s (publish {s['publish_s']:.1f} s; cpu {s['cpu_s']:.1f} s, "
             f"process {s['process_s']:.1f} s, peak {s['peak_rss_mib']:.0f} MiB)")
    wall_s = time.monotonic() - t_run
    after = _disk(data_dir)

    def total(prefix: str, key: str) -> float:
        return round(sum(v[key] for k, v in steps.items() if k.startswith(prefix)), 3)

    prefixes = {"ingest_population": "ingest_population", "ingest_business": "ingest_business",
                "ingest_land": "ingest_land_", "stage": "stage_", "validate": "validate_", "reconcile": "reconcile",
                "publish": "publish_"}
    stages = {name: total(p, "seconds") for name, p in prefixes.items()}
    stages_process = {name: total(p, "process_s") for name, p in prefixes.items()}
    stages_cpu = {name: total(p, "cpu_s") for name, p in prefixes.items()}
    peaks = {k: v["peak_rss_mib"] for k, v in steps.items() if v.get("peak_rss_mib") is not None}
    r = {"run": label, "run_id": run_id, "stages_s": stages, "total_s": round(sum(stages.values()), 3),
         "stages_process_s": stages_process, "total_process_s": round(sum(stages_process.values()), 3),
         "stages_cpu_s": stages_cpu, "total_cpu_s": round(sum(stages_cpu.values()), 3),
         "wall_s": round(wall_s, 3), "loadavg_before": [round(x, 2) for x in load_before],
         "loadavg_after": [round(x, 2) for x in os.getloadavg()], "steps": steps, "peak_rss_mib_per_task": peaks,
         "peak_rss_mib": max(peaks.values()), "disk_before": before, "disk_after": after,
         "disk_added": _disk_added(before, after),
         "staging_modes": {ds: steps[f"stage_{ds}"]["mode"] for ds in DATASETS},
         "commits": _commits(data_dir, run_id)}
    _log(f"{label} run: load average {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f}; {r['total_s']:.1f} s in the steps ({r['total_process_s']:.1f} s with process start-up), "
         f"peak RSS {r['peak_rss_mib']:.0f} MiB, zones +{r['disk_added']['zones_total']['disk'] / 2**20:.1f} MiB")
    return r


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _compare(full: dict, change: dict, none: dict) -> tuple[list, dict]:
    """Per stage: seconds of the three runs and the ratios to the full run (step seconds and process wall);
    the issue's targets, each a boolean."""
    stages = []
    for name in STAGES + ("total",):
        row = {"stage": name}
        for key, suffix in (("stages_s", ""), ("stages_process_s", "_process"), ("stages_cpu_s", "_cpu")):
            if name == "total":
                f, c, n = (r[key.replace("stages", "total")] for r in (full, change, none))
            else:
                f, c, n = full[key][name], change[key][name], none[key][name]
            row.update({f"full_s{suffix}": f, f"change_s{suffix}": c, f"no_change_s{suffix}": n,
                        f"change_ratio{suffix}": _ratio(c, f), f"no_change_ratio{suffix}": _ratio(n, f)})
        stages.append(row)
    by = {s["stage"]: s for s in stages}

    def met(value: float | None, target: float) -> bool | None:
        return None if value is None else value <= target

    over = {run["run"]: {k: v for k, v in run["peak_rss_mib_per_task"].items() if v > RSS_TARGET_MIB}
            for run in (full, change, none)}
    targets = {
        "change_stage_le_0.05": met(by["stage"]["change_ratio"], CHANGE_TARGET),
        "change_validate_le_0.05": met(by["validate"]["change_ratio"], CHANGE_TARGET),
        "change_publish_le_0.05": met(by["publish"]["change_ratio"], CHANGE_TARGET),
        "no_change_total_le_0.02": met(by["total"]["no_change_ratio"], NO_CHANGE_TARGET),
        "no_change_per_stage_le_0.02": {s: met(by[s]["no_change_ratio"], NO_CHANGE_TARGET) for s in STAGES},
        "peak_rss_le_4GiB_every_task": not any(over.values()),
        "tasks_over_4GiB_mib": over,
    }
    # the same three on each task process's wall time (interpreter start, imports, the step, exit), and on the
    # steps' CPU seconds (all the step process's threads; less sensitive to other load on a shared machine,
    # blind to the work the warehouse and the sandbox's servers do for it)
    for label, suffix in (("with_process_start", "_process"), ("on_cpu_seconds", "_cpu")):
        targets[label] = {
            "change_stage_le_0.05": met(by["stage"]["change_ratio" + suffix], CHANGE_TARGET),
            "change_validate_le_0.05": met(by["validate"]["change_ratio" + suffix], CHANGE_TARGET),
            "no_change_total_le_0.02": met(by["total"]["no_change_ratio" + suffix], NO_CHANGE_TARGET),
        }
    return stages, targets


def measure(citizens: int, fraction: float, enterprise_ratio: float) -> dict:
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings
    from sandbox.runner import run_sandbox

    data = WORK / f"data-{citizens}"
    if (data / "config.json").exists():
        _log(f"reusing the generated province in {data.relative_to(REPO)}")
    else:
        from sandbox.generator import GeneratorConfig, generate

        _log(f"generating {citizens} citizens into {data.relative_to(REPO)} ...")
        generate(GeneratorConfig(citizens=citizens, enterprise_ratio=enterprise_ratio, parcel_ratio=1.0), data)
    config = json.loads((data / "config.json").read_text())
    work = WORK / f"incr-{citizens}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh raw zone and warehouse: the first run is a full one
    work.mkdir(parents=True)
    os.environ["LIENTHONG_DATA_DIR"] = str(work)
    settings = load_settings()
    os.environ["LIENTHONG_DATABASE_URL"] = warehouse_url(settings)
    if not os.environ.get("LIENTHONG_RELEASE_SIGNING_KEY"):  # releases are signed: a key of this run's own
        from lienthong.releases import new_key

        os.environ["LIENTHONG_RELEASE_SIGNING_KEY"] = new_key()[0]
    t_all = time.monotonic()
    try:
        _log("starting the sandbox (loads the land registries) ...")
        with run_sandbox(data, WORK / f"sbx-{citizens}") as ep:
            os.environ.update(ep.airflow_conn_env())
            provinces = sorted(ep.land_dsns)
            full = _run("full", provinces, dict(os.environ), work)
            _log(f"changing {fraction:.1%} of the records in each system ...")
            changes = _change_sources(data, ep, fraction, datetime.now(UTC) - timedelta(seconds=1))
            change = _run("change", provinces, dict(os.environ), work)
            _log("no source change: the same chain again ...")
            none = _run("no_change", provinces, dict(os.environ), work)
    finally:
        stop_embedded(settings.embedded_pgdata)

    stages, targets = _compare(full, change, none)
    fetched: dict[str, dict] = {}
    sf, sc, sn = full["steps"], change["steps"], none["steps"]
    for source, ch in changes.items():
        if source in ("population", "business"):
            rows = [s[f"ingest_{source}"]["rows"] for s in (sf, sc, sn)]
        else:
            _, province, table = source.split("/")
            rows = [s[f"ingest_land_{province}"]["tables"][table]["rows"] for s in (sf, sc, sn)]
        full_rows, got, again = rows
        expected = ch["rows_changed"] + ch["boundary_rows"]
        fetched[source] = {**ch, "fetched": got, "expected": expected, "as_expected": got == expected,
                           "full_run_rows": full_rows, "fetched_share_of_full": _ratio(got, full_rows),
                           "no_change_run_fetched": again, "no_change_share_of_full": _ratio(again, full_rows)}
    tables = {ds: {run["run"]: (run["steps"][f"stage_{ds}"]["staged_table_rows"],
                                run["steps"][f"stage_{ds}"]["quarantine_table_rows"]) for run in (full, change, none)}
              for ds in DATASETS}
    return {
        "citizens": citizens,
        "changed_fraction": fraction,
        "source": {"data_dir": str(data.relative_to(REPO)), "enterprise_ratio": config.get("enterprise_ratio"),
                   "parcel_ratio": config.get("parcel_ratio"), "counts": config.get("counts")},
        "stages": stages,
        "targets": targets,
        "fetched_vs_changed": fetched,
        "all_fetches_as_expected": all(v["as_expected"] for v in fetched.values()),
        "staging_modes": {run["run"]: run["staging_modes"] for run in (full, change, none)},
        "table_rows_staged_quarantined": tables,
        "table_rows_equal": all(len(set(v.values())) == 1 for v in tables.values()),
        "disk_added_mib": {run["run"]: {z: round(run["disk_added"][z]["disk"] / 2**20, 2)
                                        for z in ZONES + ("zones_total",) if z in run["disk_added"]}
                           for run in (full, change, none)},
        "peak_rss_mib_per_task": {run["run"]: run["peak_rss_mib_per_task"] for run in (full, change, none)},
        "runs": {"full": full, "change": change, "no_change": none},
        "peak_rss_mib": max(full["peak_rss_mib"], change["peak_rss_mib"], none["peak_rss_mib"]),
        "seconds": round(time.monotonic() - t_all, 1),
        "machine": {"cpus": os.cpu_count()},
        "code": _code(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01, help="share of each system's records changed (0.01 = 1 %%)")
    ap.add_argument("--enterprise-ratio", type=float, default=0.075, help="only when data-N has to be generated")
    ap.add_argument("--result", type=Path, default=RESULTS, help="where to write the JSON results")
    ap.add_argument("--step", choices=tuple(PRELOAD), help=argparse.SUPPRESS)  # a child: one pipeline step
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)  # the province (ingest_land) or the dataset (stage, validate)
    ap.add_argument("--summary-file", type=Path, help=argparse.SUPPRESS)  # the stage summary (validate)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(step_child(args.step, args.run_id, args.arg, args.summary_file)))
        return 0
    if not 0 < args.changed <= 1:
        ap.error("--changed must be in (0, 1]")
    WORK.mkdir(parents=True, exist_ok=True)
    r = measure(args.citizens, args.changed, args.enterprise_ratio)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(r, indent=2) + "\n")
    print(f"{'stage':<18} {'full s':>9} {'1% s':>9} {'none s':>9} {'1%/full':>8} {'none/full':>9} "
          f"{'cpu 1%/full':>11} {'cpu none/full':>13}")
    for s in r["stages"]:
        ratios = [s[k] if s[k] is not None else "-" for k in ("change_ratio", "no_change_ratio", "change_ratio_cpu",
                                                              "no_change_ratio_cpu")]
        print(f"{s['stage']:<18} {s['full_s']:>9.2f} {s['change_s']:>9.2f} {s['no_change_s']:>9.2f} "
              f"{ratios[0]:>8} {ratios[1]:>9} {ratios[2]:>11} {ratios[3]:>13}")
    print(f"{'source':<24} {'changed':>8} {'boundary':>9} {'fetched':>8} {'again':>6} {'full run':>9}")
    for source, f in r["fetched_vs_changed"].items():
        print(f"{source:<24} {f['rows_changed']:>8} {f['boundary_rows']:>9} {f['fetched']:>8} "
              f"{f['no_change_run_fetched']:>6} {f['full_run_rows']:>9}"
              f"{'' if f['as_expected'] else '  (expected ' + str(f['expected']) + ')'}")
    for run, modes in r["staging_modes"].items():
        print(f"staging modes, {run}: {modes}")
    for run, added in r["disk_added_mib"].items():
        print(f"disk added, {run} (MiB): {added}")
    for run, peaks in r["peak_rss_mib_per_task"].items():
        print(f"peak RSS per task, {run} (MiB): {peaks}")
    print(f"tables' rows equal after the three runs: {r['table_rows_equal']}; targets: "
          f"{json.dumps({k: v for k, v in r['targets'].items() if k != 'tasks_over_4GiB_mib'})}")
    print(f"results: {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
