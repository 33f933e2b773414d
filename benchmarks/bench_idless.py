"""Land holders with no document number ("ID-less holders"): linkage today against the deterministic
unique-name pass (`lienthong.reconcile.idless`) in front of it.

For each size N: generate a province (`sandbox.generator`, default noise), serve it with the sandbox, land it
with the real connectors, stage the six datasets (`benchmarks/.work/idless-N/`, kept for the next run), then
link the person land holders to the citizens two ways on the same inputs:

- `today`: `people.link_people` on every person holder (what `reconcile_tables` does);
- `with_idless`: `idless.link_idless` on the ID-less holders first; `link_people` on the rest (every holder
  the pass did not link: those it sent to review and those with no unique candidate), its links kept for them.

Both are judged against `<sandbox data>/truth/links.parquet` as `lienthong.linkscore` judges the integrated
tables: precision / recall / F1 of accepted links, for the ID-less holders and for all person holders; plus,
for the pass alone, the precision of its accepted `unique_name` links by rule (province + birth year, parcel
commune), how often the model agrees with them, and its review lists.

    .venv/bin/python benchmarks/bench_idless.py --sizes 4000,100000

Writes benchmarks/results/idless-holders.json (or `--out`). No timing is asserted; seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ("citizen", "enterprise", "legal_representative", "land_holder", "parcel", "certificate")
SEED = 20261120


def prepare(size: int, seed: int = SEED, noise: dict[str, float] | None = None, root: Path | None = None) -> Path:
    """Generate (default noise, or `noise` over it), serve, land and stage one province once; returns its
    folder (staged/<dataset>.parquet, sb/truth/links.parquet)."""
    from lienthong import pipeline, zones
    from lienthong.contracts import contract
    from lienthong.db import stop_embedded
    from lienthong.settings import load_settings
    from lienthong.staging import StagePlan, stage_json_source
    from sandbox.generator import GeneratorConfig, generate
    from sandbox.runner import run_sandbox

    from sandbox.generator.config import NOISE_DEFAULTS

    root = root or WORK / f"idless-{size}"
    out = root / "staged"
    if all((out / f"{ds}.parquet").exists() for ds in DATASETS):
        return root
    data = root / "sb"
    print(f"{size}: generating ...", file=sys.stderr, flush=True)
    generate(GeneratorConfig(citizens=size, seed=seed, noise={**NOISE_DEFAULTS, **(noise or {})}), data)
    saved = dict(os.environ)
    os.environ["LIENTHONG_DATA_DIR"] = str(root / "data")
    try:
        with run_sandbox(data, root / "sbx") as ep:
            os.environ.update(ep.airflow_conn_env())
            print(f"{size}: landing ...", file=sys.stderr, flush=True)
            pipeline.ingest_population("idless")
            pipeline.ingest_business("idless")
            for province in ep.land_dsns:
                pipeline.ingest_land("idless", province)
        settings = load_settings()
        out.mkdir(parents=True, exist_ok=True)
        for ds in DATASETS:
            print(f"{size}: staging {ds} ...", file=sys.stderr, flush=True)
            c = contract(ds)
            res = stage_json_source(c, StagePlan.from_contract(c).raw_files(settings.raw_dir), run_id="idless",
                                    staged_dir=settings.staged_dir, quarantine_dir=settings.quarantine_dir)
            table = zones.read_table(str(res.staged_path))
            table = table.sort_by([(k, "ascending") for k in c.primary_key])
            pq.write_table(table, out / f"{ds}.parquet")
    finally:
        stop_embedded(root / "data" / "warehouse-pg")
        os.environ.clear()
        os.environ.update(saved)
    return root


def staged_tables(root: Path) -> dict[str, pa.Table]:
    return {ds: pq.read_table(root / "staged" / f"{ds}.parquet") for ds in DATASETS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4000,100000")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "idless-holders.json")
    args = ap.parse_args()
    for size in [int(s) for s in args.sizes.split(",")]:
        t0 = time.monotonic()
        root = prepare(size)
        print(f"{size}: prepared in {time.monotonic() - t0:.0f} s: {root}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
