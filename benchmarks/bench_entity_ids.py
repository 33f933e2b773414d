"""Entity-ID stability and the cost of incremental reconciliation over successive change runs.

    .venv/bin/python benchmarks/bench_entity_ids.py --citizens 100000 [--changed 0.01] [--runs 10]
        [--check-runs 0,2,4,6,8,10] [--seed 7] [--result PATH]

On a generated province (`benchmarks/.work/data-N`, reused when another benchmark left one there, else
generated with enterprise ratio 0.075 and parcel ratio 1.0), into a fresh data folder
`benchmarks/.work/entity-ids-N` (own raw zone, own warehouse):

1. full run: the sandbox serves the province, the real connectors ingest the three agency systems (population
   API, business API, every province's land registry), the sandbox stops; every dataset is staged and
   validated, then reconciled (link state mode `full`, every entity `created`);
2. `--runs` change runs. Each lands changed source records as new raw landings in each agency's own payload
   format with a newer update time, as `tests/integration/lienthong/test_incremental_reconcile.py::
   change_sources` does, scaled to `--changed` of the citizens, enterprises and land holders (each province)
   per run: citizens renamed, dying, born, re-registered under a corrected ID (the old record stays: a
   duplicate appears), birth dates corrected, and registered under a 12-digit ID that land holders already
   give but no citizen had; enterprises dissolving, their first representative renamed or given a mistyped
   ID; land holders renamed, deleted, losing their document number, added (a new holder row copying an
   existing one). Then every dataset is staged and validated (validation skipped where staging changed
   nothing, as the DAG skips it) and reconciled;
3. a no-change run: stage and reconcile again with nothing landed (reconcile should answer `unchanged`).

Stage + validate of a run is one child process, reconcile another (its peak RSS, VmHWM, is the run's), and
`lienthong.rebuild.check_reconcile` (relink from scratch, compare with the incremental state) a third, after
the runs `--check-runs` names. The reconcile child reads its own `reconcile_run` ledger row after the clock:
the per-step seconds (`metrics["seconds"]`), the link state (`metrics["link_state"]`: mode, counts, seconds)
and the entity registry (`metrics["entities"]`: events per kind, members changed, seconds).

Per change run, from the registry's `entity_member` table before and after the run and the run's
`entity_event` rows:
- the records the run changed: rows of the person, enterprise and parcel datasets that differ between the
  staged versions the previous and this reconciliation read (by `_merge_key` and `_record_hash`, either
  side), as member keys; the links that moved: left person records whose link in the link state
  (`person_link`) went to another citizen, method or band, or appeared or went;
- `members_moved`: member records (kind, dataset, record_key) held before and after whose entity ID changed;
  `explained`: the old or the new entity is named by one of the run's events (entity_id or other_entity_id);
  `unexplained` (target 0). Each moved or removed member gets a cause, the first that applies:
  `record_changed`, `link_moved`, `idless_holder` (a person holder with no ID at all, whose link is
  recomputed every run from the whole registry), `other`;
- an entity is untouched when none of its members before the run is a record the run changed;
  `untouched_changed`: untouched entities any of whose members now has another entity ID or none (target 0),
  their share of the untouched entities, how many an event names, and by cause, the first that applies:
  `link_moved` (a member's link moved: the member that loses the ID may be another one),
  `joined_changed_record` (a member went to an entity holding a changed record: a changed citizen now a
  duplicate of it, merged), `idless_holder`, `other` (no change explains it). The first three are entities the
  change reached through a link or a cluster though none of their own records changed: they lose or gain the
  member concerned and keep their ID. `unreached_changed` counts the `other` ones: an entity the change did not
  reach at all whose ID changed anyway (the issue's target, 0).

Summary: full-run reconcile seconds against the median change run (ratio, also on CPU seconds), the no-change
run, IDs moved over all runs (explained / unexplained), untouched entities that changed, the check results,
and the reconcile parts (mean over the change runs) that cost most. Progress goes to stderr; the results to
benchmarks/results/entity-ids-N.json (or `--result`). The machine may be shared: compare the ratios within a
run, not wall-clock seconds across machines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _memory import rss_mib

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS_DIR = REPO / "benchmarks" / "results"
SKIP_VALIDATE_MODES = ("none", "unchanged")  # staging modes after which the DAG skips validation

CITIZEN_KINDS = ("rename", "death", "born", "re_registered", "birth_corrected", "holder_id")
ENTERPRISE_KINDS = ("dissolve", "rep_renamed", "rep_id_typo")
HOLDER_KINDS = ("rename", "deleted", "drop_id", "added")
LAND_HOLDERS = "chu_su_dung"

# member dataset -> its record_key as a SQL expression over the staged table (lienthong.reconcile.integrate.clusters)
MEMBER_KEY_SQL = {
    "citizen": "citizen_id",
    "enterprise": "enterprise_code",
    "legal_representative": "enterprise_code || '#' || CAST(position AS VARCHAR)",
    "land_holder": "province_code || ':' || CAST(holder_id AS VARCHAR)",
    "parcel": "province_code || ':' || CAST(parcel_id AS VARCHAR)",
}


def _log(msg: str) -> None:
    print(f"[entity-ids] {msg}", file=sys.stderr, flush=True)


# ---- the source changes ------------------------------------------------------------------------------------
@dataclass
class Sources:
    """The newest landed payload of every source record (what the agency system holds now), kept up to date
    with what the benchmark lands. Land holders per province, keyed by their id as text."""

    citizens: dict[str, dict[str, Any]]
    enterprises: dict[str, dict[str, Any]]
    holders: dict[str, dict[str, dict[str, Any]]]
    next_holder_id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for province, rows in self.holders.items():
            self.next_holder_id.setdefault(province, max((int(k) for k in rows), default=0) + 1)


def load_sources(raw_dir: Path) -> Sources:
    """The newest landed payload per key of the citizens, the enterprises and each province's land holders."""
    import pyarrow.parquet as pq

    def newest(folder: Path) -> dict[str, dict[str, Any]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for f in sorted(folder.rglob("*.parquet")):
            t = pq.read_table(f, columns=["_key", "_ingested_at", "payload"])
            for key, at, payload in zip(t["_key"].to_pylist(), t["_ingested_at"].to_pylist(),
                                        t["payload"].to_pylist(), strict=True):
                if key not in out or str(at) >= out[key][0]:
                    out[key] = (str(at), json.loads(payload))
        return {k: v for k, (_, v) in out.items()}

    land = raw_dir / "land_registry"
    return Sources(citizens=newest(raw_dir / "population_registry" / "citizens"),
                   enterprises=newest(raw_dir / "business_registry" / "enterprises"),
                   holders={p.name: newest(p / LAND_HOLDERS) for p in sorted(land.iterdir()) if p.is_dir()})


def stamps(run: int) -> dict[str, str]:
    """Each system's update time of run `run`'s changes, in its own format: after the generator's `as_of`
    (2026-11-20), one minute per run, the same order in every system."""
    hh, mm = divmod(run, 60)
    return {"citizens": f"2026-12-01T{hh:02d}:{mm:02d}:00+07:00",
            "enterprises": f"01/12/2026 {hh:02d}:{mm:02d}:00",
            "holders": f"2026-12-01T{hh:02d}:{mm:02d}:00.000000Z"}


def _share(n_eligible: int, fraction: float) -> int:
    return min(n_eligible, max(1, round(n_eligible * fraction))) if n_eligible else 0


def _ymd(text: str | None) -> tuple[str, str, str] | None:
    """(year, month, day) of an ISO date; None for a partial, malformed or otherwise written one."""
    if not text or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    y, m, d = text.split("-")
    return y, m, d


def _new_citizen_id(prefix: str, rng: random.Random, taken: set[str]) -> str:
    while True:
        candidate = prefix[:6] + f"{rng.randrange(10**6):06d}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def plan_changes(src: Sources, rng: random.Random, run: int, fraction: float) -> tuple[dict[str, list[dict]], Counter]:
    """The changed source records of one run (`fraction` of the living citizens, of the enterprises not
    dissolved and of each province's holders not deleted, each record at most once), per landing
    ("citizens", "enterprises", "holders/<province>"), and how many of each kind of change. Deterministic for
    a given `rng` state; `src` is not modified (`apply_changes` does that once landed)."""
    stamp = stamps(run)
    kinds: Counter = Counter()
    out: dict[str, list[dict]] = {}

    # citizens
    living = sorted(k for k, v in src.citizens.items() if v.get("trangThai") != "DA_MAT")
    picked = rng.sample(living, _share(len(living), fraction))
    holder_docs = {h.get("so_giay_to") for rows in src.holders.values() for h in rows.values()}
    taken = set(src.citizens) | {d for d in holder_docs if d}
    # 12-digit IDs person holders give that no citizen has: a citizen registered under one of them now
    unknown = sorted({(h["so_giay_to"], province, hid) for province, rows in src.holders.items()
                      for hid, h in rows.items()
                      if h.get("loai") == "CA_NHAN" and h.get("so_giay_to") and len(h["so_giay_to"]) == 12
                      and h["so_giay_to"].isdigit() and h["so_giay_to"] not in src.citizens and not h.get("da_xoa")})
    rng.shuffle(unknown)
    used_docs: set[str] = set()
    items = []
    for i, key in enumerate(picked):
        kind = CITIZEN_KINDS[i % len(CITIZEN_KINDS)]
        item = json.loads(json.dumps(src.citizens[key]))
        if kind == "holder_id":
            while unknown and unknown[-1][0] in used_docs:
                unknown.pop()
            if not unknown:
                kind = "rename"
            else:
                doc, province, hid = unknown.pop()
                used_docs.add(doc)
                holder = src.holders[province][hid]
                item.update(soDinhDanh=doc, hoVaTen=holder.get("ho_ten") or item["hoVaTen"], soCmndCu=None)
                ymd = _ymd(item.get("ngaySinh"))
                if holder.get("nam_sinh") and ymd:
                    item["ngaySinh"] = f"{int(holder['nam_sinh']):04d}-{ymd[1]}-{min(int(ymd[2]), 28):02d}"
        if kind == "rename":
            words = item["hoVaTen"].split()
            last = "Khánh" if words[-1] != "Khánh" else "Khang"
            item["hoVaTen"] = " ".join(words[:-1] + [last])
        elif kind == "death":
            item["trangThai"], item["ngayMat"] = "DA_MAT", "2026-11-30"
        elif kind in ("born", "re_registered"):
            item["soDinhDanh"] = _new_citizen_id(item["soDinhDanh"], rng, taken)
            if kind == "born":
                item["hoVaTen"] = item["hoVaTen"] + " Minh"
                item["soCmndCu"] = None
        elif kind == "birth_corrected":
            ymd = _ymd(item.get("ngaySinh"))
            if ymd:
                item["ngaySinh"] = f"{ymd[0]}-{ymd[1]}-{(int(ymd[2]) % 28) + 1:02d}"
            else:  # a partial, malformed or differently written birth date: corrected to a full ISO one
                item["ngaySinh"] = "1980-01-15"
        item["capNhatLuc"] = stamp["citizens"]
        items.append(item)
        kinds[f"citizen_{kind}"] += 1
    out["citizens"] = items

    # enterprises
    active = sorted(k for k, v in src.enterprises.items() if v.get("TinhTrang") != "GIAI_THE")
    items = []
    for i, key in enumerate(rng.sample(active, _share(len(active), fraction))):
        kind = ENTERPRISE_KINDS[i % len(ENTERPRISE_KINDS)]
        item = json.loads(json.dumps(src.enterprises[key]))
        reps = item.get("NguoiDaiDien") or []
        if kind == "rep_id_typo" and not (reps and reps[0].get("SoGiayTo")):
            kind = "rep_renamed"
        if kind == "dissolve" or not reps:
            kind = "dissolve"
            item["TinhTrang"] = "GIAI_THE"
        elif kind == "rep_renamed":
            name = reps[0].get("HoTen") or ""
            reps[0]["HoTen"] = name.upper() if name != name.upper() else name.title()
        else:
            d = reps[0]["SoGiayTo"]
            reps[0]["SoGiayTo"] = d[:-1] + str((int(d[-1]) + 1) % 10) if d[-1].isdigit() else d[:-1] + "0"
        item["NgayCapNhat"] = stamp["enterprises"]
        items.append(item)
        kinds[f"enterprise_{kind}"] += 1
    out["enterprises"] = items

    # land holders, each province
    for province in sorted(src.holders):
        rows = src.holders[province]
        alive = sorted((k for k, v in rows.items() if not v.get("da_xoa")), key=int)
        items = []
        next_id = src.next_holder_id[province]
        for i, key in enumerate(rng.sample(alive, _share(len(alive), fraction))):
            kind = HOLDER_KINDS[i % len(HOLDER_KINDS)]
            item = dict(rows[key])
            if kind == "drop_id" and not item.get("so_giay_to"):
                kind = "rename"
            if kind == "rename":
                item["ho_ten"] = (item.get("ho_ten") or "") + " Văn"
            elif kind == "deleted":
                item["da_xoa"] = True
            elif kind == "drop_id":
                item["so_giay_to"], item["loai_giay_to"] = None, None
            else:
                item["id"] = next_id
                next_id += 1
            item["cap_nhat_luc"] = stamp["holders"]
            items.append(item)
            kinds[f"holder_{kind}"] += 1
        out[f"holders/{province}"] = items
    return out, kinds


def apply_changes(src: Sources, plan: dict[str, list[dict]]) -> None:
    """What the systems hold after the run's changes landed."""
    for item in plan["citizens"]:
        src.citizens[item["soDinhDanh"]] = item
    for item in plan["enterprises"]:
        src.enterprises[item["MaSoDN"]] = item
    for name, items in plan.items():
        if name.startswith("holders/"):
            province = name.split("/", 1)[1]
            for item in items:
                src.holders[province][str(item["id"])] = item
                src.next_holder_id[province] = max(src.next_holder_id[province], int(item["id"]) + 1)


def land_changes(raw_dir: Path, plan: dict[str, list[dict]], run_id: str) -> dict[str, int]:
    """Land the run's changed records as new raw landings, one per source entity, in the agencies' formats."""
    from connectors.base.landing import RawLanding

    targets = {"citizens": ("population_registry", "citizens", "soDinhDanh", "capNhatLuc"),
               "enterprises": ("business_registry", "enterprises", "MaSoDN", "NgayCapNhat")}
    rows: dict[str, int] = {}
    for name, items in plan.items():
        if not items:
            continue
        if name.startswith("holders/"):
            source, entity, key, updated = ("land_registry", f"{name.split('/', 1)[1]}/{LAND_HOLDERS}", "id",
                                            "cap_nhat_luc")
        else:
            source, entity, key, updated = targets[name]
        landing = RawLanding(raw_dir, source, entity, run_id)
        landing.write_page(items, key_field=key, updated_field=updated)
        landing.commit()
        rows[name] = len(items)
    return rows


# ---- children: stage + validate, reconcile, check ----------------------------------------------------------
def child(kind: str, run_id: str) -> dict:
    from lienthong import pipeline

    if kind == "stage_validate":
        from lienthong.reconcile.sources import INPUT_DATASETS

        out: dict[str, Any] = {"datasets": {}}
        t_all = time.monotonic()
        for name in INPUT_DATASETS:
            t0 = time.monotonic()
            summary = pipeline.stage(name, run_id)
            stage_s = time.monotonic() - t0
            d = {k: summary.get(k) for k in ("mode", "rows_in", "rows_staged", "rows_quarantined", "rows_unchanged")}
            d["stage_s"] = round(stage_s, 3)
            if summary.get("mode") not in SKIP_VALIDATE_MODES:
                t0 = time.monotonic()
                v = pipeline.validate(name, run_id, summary)
                d.update(validate_s=round(time.monotonic() - t0, 3), gate_passed=v["gate_passed"],
                         moved_to_quarantine=v.get("moved_to_quarantine") or {})
            out["datasets"][name] = d
        out.update(seconds=round(time.monotonic() - t_all, 3), peak_rss_mib=rss_mib())
        return out
    if kind == "reconcile":
        # imported before the clock starts, as bench_incremental's reconcile step
        import lienthong.findings  # noqa: F401
        import lienthong.reconcile.run  # noqa: F401

        c0, t0 = time.process_time(), time.monotonic()
        r = pipeline.reconcile(run_id)
        seconds, cpu_s = time.monotonic() - t0, time.process_time() - c0
        out = {"seconds": round(seconds, 3), "cpu_s": round(cpu_s, 3), "peak_rss_mib": rss_mib(),
               "unchanged": bool(r.get("unchanged")), "since": r.get("since")}
        if not out["unchanged"]:
            from lienthong import runs
            from lienthong.db import connect, warehouse_url
            from lienthong.settings import load_settings

            with connect(warehouse_url(load_settings())) as conn:
                row = runs.reconcile_run(conn, run_id)
            m = dict(row.metrics or {}) if row else {}
            ls, ent = dict(m.get("link_state") or {}), dict(m.get("entities") or {})
            out.update(ledger_status=row.status if row else None, step_seconds=m.get("seconds") or {},
                       link_state={k: ls.get(k) for k in ("mode", "counts", "seconds")},
                       entities={k: ent.get(k) for k in ("events", "members_changed", "seconds")},
                       inputs={n: i.get("staged_path") for n, i in (m.get("inputs") or {}).items()},
                       link_refs=ls.get("refs") or {},
                       rows=dict(row.counts or {}) if row else {})
        return out
    if kind == "check":
        from lienthong.rebuild import check_reconcile
        from lienthong.settings import load_settings

        t0 = time.monotonic()
        c = check_reconcile(load_settings())
        parts = {"link_state": {n: v["equal"] for n, v in (c.get("link_state") or {}).items()},
                 "integrated": {n: v["equal"] for n, v in (c.get("integrated") or {}).items()},
                 "entities": (c.get("entities") or {}).get("equal"), "findings": (c.get("findings") or {}).get("equal")}
        differing = {f"{part}/{n}": v for part in ("link_state", "integrated") for n, v in (c.get(part) or {}).items()
                     if not v.get("equal")}
        differing |= {part: c[part] for part in ("entities", "findings") if c.get(part) and not c[part].get("equal")}
        return {"equal": bool(c.get("equal")), "reconcile": c.get("reconcile"), "parts": parts,
                "error": c.get("error"), "differing": differing,
                "seconds": round(time.monotonic() - t0, 3), "peak_rss_mib": rss_mib()}
    raise ValueError(kind)


def _child(kind: str, run_id: str, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--step", kind, "--run-id", run_id]
    t0 = time.monotonic()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} of run {run_id} failed (exit {out.returncode})")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_s"] = round(time.monotonic() - t0, 3)
    return r


# ---- the registry comparison -------------------------------------------------------------------------------
def _members(settings) -> Any:
    from lienthong import entities

    members, _ = entities.load(entities.registry_dir(settings))
    return members.select(["kind", "dataset", "record_key", "entity_id"])


def _events(settings, run_id: str) -> Any:
    import pyarrow.compute as pc

    from lienthong import entities, zones

    t = zones.read_table(entities.registry_dir(settings) / entities.EVENT_TABLE)
    return t.filter(pc.equal(t["run_id"], run_id)).select(["event", "kind", "entity_id", "other_entity_id"])


CAUSES = ("record_changed", "link_moved", "idless_holder", "other")  # first that applies, in this order
# why an untouched entity changed: the first that applies
UNTOUCHED_CAUSES = ("link_moved", "joined_changed_record", "idless_holder", "other")


def compare_registry(settings, before: Any, after: Any, events: Any, old: dict, new: dict) -> dict:
    """How the members' entity IDs moved in one run, against the run's events and what the run changed.

    `old` / `new`: the previous and this reconciliation's `inputs` (staged refs) and `link_refs` (link state).
    Each member record that changed entity ID or left the registry gets a cause, the first that applies:
    `record_changed` (its staged row changed), `link_moved` (its person link in the link state went to another
    citizen, method or band: relinked because a citizen sharing a candidate key changed), `idless_holder` (a
    person land holder without any ID: its link is recomputed each run from the whole registry), `other`."""
    from lienthong import zones
    from lienthong.duck import session
    from lienthong.reconcile import linkstate

    with session(settings, purpose="bench-entity-ids") as con:
        con.register("mb", before)
        con.register("ma", after)
        con.register("ev", events)
        parts = []
        for ds, key_sql in MEMBER_KEY_SQL.items():
            if old["inputs"].get(ds) == new["inputs"].get(ds):
                continue
            zones.register(con, f"old_{ds}", old["inputs"][ds])
            zones.register(con, f"new_{ds}", new["inputs"][ds])
            # rows on either side whose _merge_key is missing on the other or whose hash differs
            parts.append(f"""
                SELECT '{ds}' AS dataset, {key_sql} AS record_key FROM old_{ds} o
                WHERE NOT EXISTS (SELECT 1 FROM new_{ds} n WHERE n._merge_key = o._merge_key AND n._record_hash = o._record_hash)
                UNION
                SELECT '{ds}', {key_sql} FROM new_{ds} n
                WHERE NOT EXISTS (SELECT 1 FROM old_{ds} o WHERE o._merge_key = n._merge_key AND o._record_hash = n._record_hash)""")
        con.execute("CREATE TEMP TABLE chg AS " + (" UNION ".join(parts) if parts else
                                                   "SELECT NULL::VARCHAR AS dataset, NULL::VARCHAR AS record_key WHERE false"))
        zones.register(con, "lk_old", old["link_refs"][linkstate.LINKS])
        zones.register(con, "lk_new", new["link_refs"][linkstate.LINKS])
        zones.register(con, "left_old", old["link_refs"][linkstate.LEFT])
        zones.register(con, "left_new", new["link_refs"][linkstate.LEFT])
        con.execute("""CREATE TEMP TABLE lm AS
            SELECT coalesce(o.dataset, n.dataset) AS dataset, coalesce(o.left_id, n.left_id) AS record_key
            FROM lk_old o FULL OUTER JOIN lk_new n USING (_key)
            WHERE o._key IS NULL OR n._key IS NULL OR o.right_id IS DISTINCT FROM n.right_id
               OR o.method IS DISTINCT FROM n.method OR o.band IS DISTINCT FROM n.band""")
        con.execute("""CREATE TEMP TABLE il AS
            SELECT dataset, unique_id AS record_key FROM left_old WHERE id_number IS NULL AND legacy_id IS NULL
            UNION SELECT dataset, unique_id FROM left_new WHERE id_number IS NULL AND legacy_id IS NULL""")
        con.execute("""CREATE TEMP TABLE named AS SELECT entity_id FROM ev UNION SELECT other_entity_id FROM ev
                       WHERE other_entity_id IS NOT NULL""")
        con.execute("""CREATE TEMP TABLE diff AS
            SELECT b.kind, b.dataset, b.record_key, b.entity_id AS old_id, a.entity_id AS new_id,
                   (b.entity_id IN (SELECT entity_id FROM named) OR a.entity_id IN (SELECT entity_id FROM named)) AS explained,
                   CASE WHEN EXISTS (SELECT 1 FROM chg c WHERE c.dataset = b.dataset AND c.record_key = b.record_key) THEN 'record_changed'
                        WHEN EXISTS (SELECT 1 FROM lm WHERE lm.dataset = b.dataset AND lm.record_key = b.record_key) THEN 'link_moved'
                        WHEN EXISTS (SELECT 1 FROM il WHERE il.dataset = b.dataset AND il.record_key = b.record_key) THEN 'idless_holder'
                        ELSE 'other' END AS cause
            FROM mb b LEFT JOIN ma a USING (kind, dataset, record_key)
            WHERE a.entity_id IS NULL OR a.entity_id <> b.entity_id""")
        moved = con.execute("""SELECT count(*), count(*) FILTER (WHERE explained), count(*) FILTER (WHERE NOT explained)
                               FROM diff WHERE new_id IS NOT NULL""").fetchone()
        by_cause = {c: {"explained": 0, "unexplained": 0} for c in CAUSES}
        for cause, explained, n in con.execute("""SELECT cause, explained, count(*) FROM diff WHERE new_id IS NOT NULL
                                                  GROUP BY ALL""").fetchall():
            by_cause[cause]["explained" if explained else "unexplained"] = int(n)
        dropped = {c: int(n) for c, n in con.execute(
            "SELECT cause, count(*) FROM diff WHERE new_id IS NULL GROUP BY ALL ORDER BY ALL").fetchall()}
        moved_by = {f"{k}/{d}": int(n) for k, d, n in con.execute(
            "SELECT kind, dataset, count(*) FROM diff WHERE new_id IS NOT NULL GROUP BY ALL ORDER BY ALL").fetchall()}
        unexplained_sample = [dict(zip(("kind", "dataset", "record_key", "old_id", "new_id", "cause"), r, strict=True))
                              for r in con.execute("""SELECT kind, dataset, record_key, old_id, new_id, cause FROM diff
                                                      WHERE new_id IS NOT NULL AND NOT explained ORDER BY ALL LIMIT 5""").fetchall()]
        counts = con.execute("""
            SELECT (SELECT count(*) FROM mb), (SELECT count(*) FROM ma),
                   (SELECT count(*) FROM ma a ANTI JOIN mb b USING (kind, dataset, record_key)),
                   (SELECT count(*) FROM mb b ANTI JOIN ma a USING (kind, dataset, record_key)),
                   (SELECT count(*) FROM chg), (SELECT count(*) FROM lm),
                   (SELECT count(*) FROM chg c SEMI JOIN (SELECT dataset, record_key FROM mb UNION SELECT dataset, record_key FROM ma) m
                    USING (dataset, record_key))""").fetchone()
        # untouched: none of the entity's members before the run is a record the run changed
        con.execute("""CREATE TEMP TABLE touched AS SELECT DISTINCT b.entity_id FROM mb b
                       JOIN chg c USING (dataset, record_key)""")
        untouched = con.execute("""SELECT count(DISTINCT entity_id) FROM mb
                                   WHERE entity_id NOT IN (SELECT entity_id FROM touched)""").fetchone()[0]
        # an untouched entity's cause: over all its members before the run (a member whose link moved may
        # take the entity's ID along, the member that loses it being another one)
        con.execute("""CREATE TEMP TABLE untouched_changed AS
            WITH changed AS (
              SELECT old_id AS entity_id, bool_or(new_id IS NOT NULL) AS id_moved FROM diff
              WHERE old_id NOT IN (SELECT entity_id FROM touched) GROUP BY old_id)
            SELECT c.entity_id, c.id_moved, c.entity_id IN (SELECT entity_id FROM named) AS named,
                   min(CASE WHEN EXISTS (SELECT 1 FROM lm WHERE lm.dataset = b.dataset AND lm.record_key = b.record_key) THEN 0
                            WHEN EXISTS (SELECT 1 FROM diff d JOIN ma a ON a.entity_id = d.new_id
                                         JOIN chg ON chg.dataset = a.dataset AND chg.record_key = a.record_key
                                         WHERE d.old_id = c.entity_id) THEN 1
                            WHEN EXISTS (SELECT 1 FROM il WHERE il.dataset = b.dataset AND il.record_key = b.record_key) THEN 2
                            ELSE 3 END) AS cause_rank
            FROM changed c JOIN mb b ON b.entity_id = c.entity_id GROUP BY ALL""")
        uc = con.execute("""SELECT count(*), count(*) FILTER (WHERE named), count(*) FILTER (WHERE id_moved)
                            FROM untouched_changed""").fetchone()
        uc_cause = {UNTOUCHED_CAUSES[int(rank)]: int(n) for rank, n in con.execute(
            "SELECT cause_rank, count(*) FROM untouched_changed GROUP BY ALL ORDER BY ALL").fetchall()}
        uc_sample = [r[0] for r in con.execute(
            "SELECT entity_id FROM untouched_changed ORDER BY cause_rank DESC, entity_id LIMIT 5").fetchall()]
        entities_before = con.execute("SELECT count(DISTINCT entity_id) FROM mb").fetchone()[0]
    return {
        "members_before": int(counts[0]), "members_after": int(counts[1]),
        "members_added": int(counts[2]), "members_removed": int(counts[3]),
        "members_moved": int(moved[0]), "moved_explained": int(moved[1]), "moved_unexplained": int(moved[2]),
        "moved_by_cause": by_cause, "removed_by_cause": dropped, "moved_by_kind_dataset": moved_by,
        "unexplained_sample": unexplained_sample,
        "records_changed": int(counts[4]), "links_moved": int(counts[5]),
        "records_changed_known_to_registry": int(counts[6]),
        "entities_before": int(entities_before), "entities_touched": int(entities_before - untouched),
        "entities_untouched": int(untouched), "untouched_changed": int(uc[0]),
        "untouched_changed_named_by_event": int(uc[1]), "untouched_changed_id_moved": int(uc[2]),
        "untouched_changed_by_cause": uc_cause,
        "untouched_changed_share": round(uc[0] / untouched, 6) if untouched else None,
        "untouched_changed_sample": uc_sample,
    }


# ---- the benchmark -----------------------------------------------------------------------------------------
def _reconcile_log(label: str, r: dict) -> None:
    if r["unchanged"]:
        _log(f"{label}: reconcile unchanged (since {r['since']}) in {r['seconds']:.2f} s")
        return
    ls = r["link_state"]
    c = ls.get("counts") or {}
    _log(f"{label}: reconcile in {r['seconds']:.1f} s (cpu {r['cpu_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB); "
         f"link state {ls['mode']}: relinked {c.get('relinked')} ({c.get('relinked_by_registry_change', '-')} for a "
         f"registry change), links {c.get('links_changed', '-')}; entity events {r['entities']['events']}, "
         f"{r['entities']['members_changed']} member rows written in {r['entities']['seconds']:.1f} s")


def _stage_log(label: str, s: dict) -> None:
    modes = {n: d["mode"] for n, d in s["datasets"].items()}
    _log(f"{label}: staged + validated in {s['seconds']:.1f} s (process {s['process_s']:.1f} s, peak "
         f"{s['peak_rss_mib']:.0f} MiB): {modes}")


def _parts(r: dict) -> dict[str, float]:
    """Where a reconcile's seconds went: the link state, the reconcile steps, the entity registry, the rest
    (reading the staged tables, writing the outputs, the findings sync, the ledger)."""
    steps = {f"step_{k}": float(v) for k, v in (r.get("step_seconds") or {}).items()}
    link = float((r["link_state"].get("seconds") or {}).get("total") or 0.0)
    ent = float(r["entities"].get("seconds") or 0.0)
    out = {"link_state": link, **steps, "entities": ent}
    out["rest"] = round(r["seconds"] - sum(out.values()), 3)
    return out


def measure(citizens: int, fraction: float, runs: int, check_runs: set[int], seed: int,
            enterprise_ratio: float) -> dict:
    from lienthong import pipeline
    from lienthong.db import stop_embedded, warehouse_url
    from lienthong.settings import load_settings
    from sandbox.runner import run_sandbox

    data = WORK / f"data-{citizens}"
    t_all = time.monotonic()
    if (data / "config.json").exists():
        _log(f"reusing the generated province in {data.relative_to(REPO)}")
        generated_s = None
    else:
        from sandbox.generator import GeneratorConfig, generate

        _log(f"generating {citizens} citizens into {data.relative_to(REPO)} ...")
        t0 = time.monotonic()
        generate(GeneratorConfig(citizens=citizens, enterprise_ratio=enterprise_ratio, parcel_ratio=1.0), data)
        generated_s = round(time.monotonic() - t0, 1)
    config = json.loads((data / "config.json").read_text())
    work = WORK / f"entity-ids-{citizens}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["LIENTHONG_DATA_DIR"] = str(work)
    settings = load_settings()
    os.environ["LIENTHONG_DATABASE_URL"] = warehouse_url(settings)
    env = dict(os.environ)
    rng = random.Random(seed)
    result: dict[str, Any] = {"citizens": citizens, "changed_fraction": fraction, "runs": runs, "seed": seed,
                              "check_runs": sorted(check_runs), "code_at_start": _code()}
    try:
        # 1. the full run
        _log("starting the sandbox (loads the land registries) and ingesting with the real connectors ...")
        t0 = time.monotonic()
        ingest: dict[str, Any] = {}
        with run_sandbox(data, WORK / f"sbx-entity-ids-{citizens}") as ep:
            os.environ.update(ep.airflow_conn_env())
            ingest["population"] = pipeline.ingest_population("full")["rows"]
            ingest["business"] = pipeline.ingest_business("full")["rows"]
            for province in sorted(ep.land_dsns):
                ingest[f"land/{province}"] = pipeline.ingest_land("full", province)["rows"]
        ingest_s = time.monotonic() - t0
        _log(f"ingested {ingest} in {ingest_s:.1f} s")
        full_stage = _child("stage_validate", "full", env)
        _stage_log("full", full_stage)
        full = _child("reconcile", "full", env)
        _reconcile_log("full", full)
        result["full"] = {"ingest_rows": ingest, "ingest_s": round(ingest_s, 1), "stage_validate": full_stage,
                          "reconcile": full, "reconcile_parts_s": _parts(full)}
        if 0 in check_runs:
            c = _child("check", "full", env)
            result["full"]["check_reconcile"] = c
            _log(f"full: check_reconcile equal={c['equal']} in {c['seconds']:.1f} s")

        # 2. the change runs
        src = load_sources(settings.raw_dir)
        _log(f"sources: {len(src.citizens)} citizens, {len(src.enterprises)} enterprises, "
             f"{ {p: len(h) for p, h in src.holders.items()} } land holders")
        last = full
        before = _members(settings)
        change_runs = []
        for run in range(1, runs + 1):
            run_id = f"change-{run:02d}"
            t_run = time.monotonic()
            code = _code()
            if not _same_code(code, result["code_at_start"]):
                _log(f"{run_id}: the platform code changed since the start: {code}")
            plan, kinds = plan_changes(src, rng, run, fraction)
            landed = land_changes(settings.raw_dir, plan, run_id)
            apply_changes(src, plan)
            _log(f"{run_id}: landed {sum(landed.values())} changed records {landed}: {dict(sorted(kinds.items()))}")
            sv = _child("stage_validate", run_id, env)
            _stage_log(run_id, sv)
            r = _child("reconcile", run_id, env)
            _reconcile_log(run_id, r)
            if r["unchanged"]:
                raise SystemExit(f"{run_id}: reconcile answered unchanged after a change")
            t0 = time.monotonic()
            after = _members(settings)
            reg = compare_registry(settings, before, after, _events(settings, run_id), last, r)
            compare_s = time.monotonic() - t0
            unexplained = {c: v["unexplained"] for c, v in reg["moved_by_cause"].items() if v["unexplained"]}
            _log(f"{run_id}: {reg['members_moved']} member records changed entity ID ({reg['moved_explained']} "
                 f"explained by the run's events, {reg['moved_unexplained']} not{' ' + str(unexplained) if unexplained else ''}), "
                 f"{reg['members_removed']} left the registry; {reg['records_changed']} records changed, "
                 f"{reg['links_moved']} links moved, {reg['entities_touched']} entities touched; untouched entities "
                 f"with a changed ID: {reg['untouched_changed']} of {reg['entities_untouched']} "
                 f"({reg['untouched_changed_named_by_event']} named by an event; by cause "
                 f"{reg['untouched_changed_by_cause']}) [compared in {compare_s:.1f} s]")
            entry = {"run": run, "run_id": run_id, "code": code, "landed": landed, "change_kinds": dict(sorted(kinds.items())),
                     "stage_validate": sv, "reconcile": r, "reconcile_parts_s": _parts(r), "registry": reg}
            if run in check_runs:
                c = _child("check", run_id, env)
                entry["check_reconcile"] = c
                _log(f"{run_id}: check_reconcile equal={c['equal']} in {c['seconds']:.1f} s"
                     + ("" if c["equal"] else f": differing {c['differing']} {c.get('error') or ''}"))
            entry["wall_s"] = round(time.monotonic() - t_run, 1)
            change_runs.append(entry)
            before, last = after, r

        # 3. nothing landed
        ns = _child("stage_validate", "no-change", env)
        _stage_log("no-change", ns)
        nr = _child("reconcile", "no-change", env)
        _reconcile_log("no-change", nr)
    finally:
        stop_embedded(settings.embedded_pgdata)

    result["change_runs"] = change_runs
    result["no_change"] = {"stage_validate": ns, "reconcile": nr}
    result["summary"] = summarise(result)
    result.update(source={"data_dir": str(data.relative_to(REPO)), "generated_s": generated_s,
                          "enterprise_ratio": config.get("enterprise_ratio"), "parcel_ratio": config.get("parcel_ratio"),
                          "counts": config.get("counts")},
                  seconds=round(time.monotonic() - t_all, 1), machine={"cpus": os.cpu_count(),
                                                                       "loadavg_end": list(os.getloadavg())},
                  code=_code(), date=time.strftime("%Y-%m-%d"))
    # the tree is shared: a commit or an edit of the platform during the benchmark mixes two versions
    result["code_changed_during_benchmark"] = not all(_same_code(c["code"], result["code_at_start"])
                                                      for c in [*change_runs, result])
    return result


def summarise(r: dict) -> dict:
    full = r["full"]["reconcile"]
    ch = r["change_runs"]
    secs = [c["reconcile"]["seconds"] for c in ch]
    cpus = [c["reconcile"]["cpu_s"] for c in ch]
    regs = [c["registry"] for c in ch]
    med, med_cpu = statistics.median(secs), statistics.median(cpus)
    parts = [c["reconcile_parts_s"] for c in ch]
    mean_parts = {k: round(statistics.mean(p.get(k, 0.0) for p in parts), 3) for k in sorted({k for p in parts for k in p})}
    full_parts = r["full"]["reconcile_parts_s"]
    link_secs = [c["reconcile"]["link_state"].get("seconds") or {} for c in ch]
    mean_link = {k: round(statistics.mean(s.get(k, 0.0) for s in link_secs), 3)
                 for k in sorted({k for s in link_secs for k in s})}
    checks = {str(label): v["check_reconcile"]["equal"]
              for label, v in [("full", r["full"]), *((c["run"], c) for c in ch)] if "check_reconcile" in v}
    untouched = sum(g["entities_untouched"] for g in regs)
    return {
        "full_reconcile_s": full["seconds"], "full_reconcile_cpu_s": full["cpu_s"],
        "change_reconcile_s": secs, "median_change_reconcile_s": med, "median_change_over_full": round(med / full["seconds"], 4),
        "median_change_cpu_over_full_cpu": round(med_cpu / full["cpu_s"], 4),
        "full_peak_rss_mib": full["peak_rss_mib"], "change_peak_rss_mib": [c["reconcile"]["peak_rss_mib"] for c in ch],
        "link_state_modes": [c["reconcile"]["link_state"]["mode"] for c in ch],
        "relinked": [c["reconcile"]["link_state"]["counts"].get("relinked") for c in ch],
        "relinked_by_registry_change": [c["reconcile"]["link_state"]["counts"].get("relinked_by_registry_change")
                                        for c in ch],
        "left_records": full["link_state"]["counts"].get("left"),
        "links_changed": [c["reconcile"]["link_state"]["counts"].get("links_changed") for c in ch],
        "entity_events": [c["reconcile"]["entities"]["events"] for c in ch],
        "members_moved": [g["members_moved"] for g in regs],
        "members_moved_total": sum(g["members_moved"] for g in regs),
        "moved_explained_total": sum(g["moved_explained"] for g in regs),
        "moved_unexplained_total": sum(g["moved_unexplained"] for g in regs),
        "untouched_changed": [g["untouched_changed"] for g in regs],
        "untouched_changed_total": sum(g["untouched_changed"] for g in regs),
        "untouched_changed_named_by_event_total": sum(g["untouched_changed_named_by_event"] for g in regs),
        "untouched_changed_by_cause_total": {c: sum(g["untouched_changed_by_cause"].get(c, 0) for g in regs)
                                             for c in UNTOUCHED_CAUSES},
        "moved_unexplained_by_cause_total": {c: sum(g["moved_by_cause"][c]["unexplained"] for g in regs) for c in CAUSES},
        "members_removed_by_cause_total": {c: sum(g["removed_by_cause"].get(c, 0) for g in regs) for c in CAUSES},
        "untouched_changed_share_overall": round(sum(g["untouched_changed"] for g in regs) / untouched, 6) if untouched else None,
        "untouched_changed_share_max": max((g["untouched_changed_share"] or 0.0) for g in regs) if regs else None,
        # the target (0): entities the change did not reach at all (no member changed, no member's link
        # moved, no changed record joined their cluster, no ID-less member relinked) whose members' IDs changed
        "unreached_changed_total": sum(g["untouched_changed_by_cause"].get("other", 0) for g in regs),
        "unreached_changed_share_overall": (round(sum(g["untouched_changed_by_cause"].get("other", 0) for g in regs)
                                                  / untouched, 6) if untouched else None),
        "no_change_unchanged": r["no_change"]["reconcile"]["unchanged"],
        "no_change_reconcile_s": r["no_change"]["reconcile"]["seconds"],
        "no_change_staging_modes": sorted({d["mode"] for d in r["no_change"]["stage_validate"]["datasets"].values()}),
        "check_reconcile_equal": checks,
        "full_reconcile_parts_s": full_parts,
        "mean_change_reconcile_parts_s": mean_parts,
        "costliest_change_part": max((k for k in mean_parts if k != "rest"), key=lambda k: mean_parts[k]) if mean_parts else None,
        "mean_change_link_state_seconds": mean_link,
        "mean_change_stage_validate_s": round(statistics.mean(c["stage_validate"]["seconds"] for c in ch), 3),
        "full_stage_validate_s": r["full"]["stage_validate"]["seconds"],
    }


def _code() -> dict:
    def git(*args: str) -> str | None:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    platform = ("lienthong", "connectors", "sandbox", "schemas")
    dirty = git("diff", "HEAD", "--", *platform)
    trees = git("rev-parse", *(f"HEAD:{d}" for d in platform))
    return {"commit": git("rev-parse", "HEAD"), "platform_files_modified": None if dirty is None else bool(dirty),
            # what the steps run: the platform folders' trees and any uncommitted edit of them
            "platform": hashlib.sha256(f"{trees}\n{dirty}".encode()).hexdigest()[:16]}


def _same_code(a: dict, b: dict) -> bool:
    return a.get("platform") == b.get("platform")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01, help="share of citizens, enterprises, land holders per run")
    ap.add_argument("--runs", type=int, default=10, help="change runs after the full one")
    ap.add_argument("--check-runs", default="0,2,4,6,8,10",
                    help="runs after which check_reconcile compares with a rebuild (0 = after the full run; '' none)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--enterprise-ratio", type=float, default=0.075, help="only when data-N has to be generated")
    ap.add_argument("--result", type=Path, help="default benchmarks/results/entity-ids-N.json")
    ap.add_argument("--step", choices=("stage_validate", "reconcile", "check"), help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(child(args.step, args.run_id), default=str))
        return 0
    if not 0 < args.changed <= 1:
        ap.error("--changed must be in (0, 1]")
    if not 1 <= args.runs <= 1000:
        ap.error("--runs must be in [1, 1000]")
    checks = {int(x) for x in args.check_runs.split(",") if x.strip()}
    WORK.mkdir(parents=True, exist_ok=True)
    r = measure(args.citizens, args.changed, args.runs, checks, args.seed, args.enterprise_ratio)
    path = args.result or RESULTS_DIR / f"entity-ids-{args.citizens}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2, default=str) + "\n")
    s = r["summary"]
    print(f"{'run':>4} {'reconcile s':>11} {'peak MiB':>8} {'relinked':>8} {'by reg':>6} {'moved':>6} "
          f"{'unexpl':>6} {'untouched chg':>13}  events")
    for c in r["change_runs"]:
        rc, g = c["reconcile"], c["registry"]
        print(f"{c['run']:>4} {rc['seconds']:>11.1f} {rc['peak_rss_mib']:>8.0f} {rc['link_state']['counts']['relinked']:>8} "
              f"{rc['link_state']['counts'].get('relinked_by_registry_change', 0):>6} {g['members_moved']:>6} "
              f"{g['moved_unexplained']:>6} {g['untouched_changed']:>13}  {rc['entities']['events']}")
    print(f"full reconcile {s['full_reconcile_s']:.1f} s, median change {s['median_change_reconcile_s']:.1f} s "
          f"(ratio {s['median_change_over_full']}, cpu ratio {s['median_change_cpu_over_full_cpu']}); no-change: "
          f"unchanged={s['no_change_unchanged']} in {s['no_change_reconcile_s']:.2f} s")
    print(f"IDs moved {s['members_moved_total']} ({s['moved_explained_total']} explained, "
          f"{s['moved_unexplained_total']} not); untouched entities changed {s['untouched_changed_total']} "
          f"(share {s['untouched_changed_share_overall']}), of which not reached by the change at all "
          f"{s['unreached_changed_total']}; check_reconcile {s['check_reconcile_equal']}")
    print(f"unexplained moves by cause {s['moved_unexplained_by_cause_total']}; untouched entities changed by cause "
          f"{s['untouched_changed_by_cause_total']}")
    print(f"mean change-run reconcile parts (s): {s['mean_change_reconcile_parts_s']}")
    print(f"results: {path} ({r['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
