"""Why a link was made: the saved link models of each reconciliation run, and the explanation of one link
for an auditor (`lienthong explain-link`).

Owns:
- what each run records of the models it used: `<data>/integrated/link_models/run=<run>/manifest.json` names,
  per person linkage, the persisted model (`lienthong.reconcile.models`: Splink's settings-and-parameters
  JSON, loadable by `splink.Linker(tables, settings=path)`, and the name frequencies frozen with it), its
  sha256, and the run's staged inputs, integrated outputs and bands;
- the explanation of one link of an integrated link table: for the exact passes, the rule that linked it;
  for the model, the record pair rescored with the run's own saved model over the run's own staged inputs,
  shown as Splink's waterfall (prior, then per comparison the level that fired, its Bayes factor and match
  weight, then the total and the probability), as text and, on request, as Splink's chart in SVG.

Every personal value shown is masked as reports mask them (`lienthong.masking`): IDs keep their last three
characters, names their initials, dates their year.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lienthong import zones
from lienthong.duck import session
from lienthong.masking import mask_by_key, mask_id
from lienthong.paths import run_folder

log = logging.getLogger(__name__)

MODELS_DIR = "link_models"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class LinkDataset:
    """An integrated link table: which model scored it, which staged source its records come from, and how a
    record key is written."""

    model: str
    source: str
    key_format: str
    key_sql: str  # the record key as a DuckDB expression over the link table's columns


LINK_DATASETS: dict[str, LinkDataset] = {
    "enterprise_representative_link": LinkDataset(
        model="representative_citizen", source="legal_representative", key_format="<enterprise_code>#<position>",
        key_sql="enterprise_code || '#' || CAST(position AS VARCHAR)"),
    "parcel_holder_link": LinkDataset(
        model="holder_citizen", source="land_holder", key_format="<province_code>:<holder_id>",
        key_sql="province_code || ':' || CAST(holder_id AS VARCHAR)"),
}

# The rules of the deterministic passes, as `people._exact_links` and `organisations` apply them.
PERSON_RULES = {
    "exact_id": "exact pass 1: the 12-digit personal ID the record gives is the citizen's ID in the population "
                "registry, confirmed by the name (folded, in any word order, or Jaro-Winkler >= 0.85) or the "
                "birth year agreeing; an ID the registry holds twice links to the first record in key order",
    "legacy_id": "exact pass 2: the old 9-digit ID (CMND) the record gives is the one in the registry's old-ID "
                 "field of the citizen, confirmed by the name or the birth year agreeing",
    "unique_name": "ID-less holder: the holder gives no document number; exactly one citizen has its folded name "
                   "and birth year in the holder's province (or its name at the holder's address), and the model "
                   "ranks that citizen first (lienthong.reconcile.idless)",
}
ORGANISATION_RULES = {
    "exact_id": "tax code: the holder's document number is an enterprise code of the business registry (a code "
                "listed as a duplicate resolves to its surviving record)",
    "name_address_accept": "name and address: no enterprise has the holder's tax code; exactly one enterprise has "
                           "the holder's folded name and its head-office street agrees",
    "name_address_one": "name only: exactly one enterprise has the holder's folded name but its head-office street "
                        "differs, so a person must confirm",
    "name_address_many": "name only: {n} enterprises have the holder's folded name, so a person must choose",
    "name_address_reject": "no enterprise has the holder's tax code or its folded name",
}


class ExplainError(LookupError):
    """The link cannot be explained (unknown dataset, no such record, no saved model): the message says why."""


class UnknownDataset(ExplainError):
    pass


class LinkNotFound(ExplainError):
    pass


# --- the saved models ------------------------------------------------------------------------------------


def models_dir(integrated_dir: Path, run_id: str) -> Path:
    """`<integrated>/link_models/run=<run>/`, laid out like the integrated datasets of the same run."""
    return run_folder(integrated_dir, MODELS_DIR, run_id)


def _write_text(path: Path, text: str) -> None:
    # Written under a temporary name and renamed, like the integrated Parquet files; the mode is the
    # process umask's, which the platform's entry points make private (`lienthong.private_files`).
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_models(
    integrated_dir: Path,
    run_id: str,
    models: dict[str, Any],
    *,
    inputs: dict[str, str],
    outputs: dict[str, str],
    bands: dict[str, float],
) -> dict[str, str]:
    """Write the run's manifest naming the persisted model (`lienthong.runs.LinkModelRecord`, files from
    `lienthong.reconcile.models`) each person linkage used, with its staged inputs, outputs and bands; return
    {model name: path of its Splink JSON}."""
    from lienthong.reconcile.models import MODEL_FILE, TF_FILE

    folder = models_dir(integrated_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    entries: dict[str, Any] = {}
    for name, record in models.items():
        path = Path(record.path) / MODEL_FILE
        text = path.read_text(encoding="utf-8")
        paths[name] = str(path)
        entries[name] = {"file": str(path), "tf_file": str(Path(record.path) / TF_FILE), "model_id": record.model_id,
                         "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    manifest = {"run_id": run_id, "written_at": datetime.now(UTC).isoformat(), "models": entries,
                "inputs": inputs, "outputs": outputs, "bands": bands}
    _write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    log.info("link models of run %s: %s", run_id, {n: e["model_id"] for n, e in entries.items()})
    return paths


def run_manifest(integrated_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """The manifest of a run's link models: of `run_id`, or of the newest run that saved one."""
    if run_id is not None:
        path = models_dir(integrated_dir, run_id) / MANIFEST
        if not path.is_file():
            raise ExplainError(f"reconcile run {run_id!r} saved no link models under {path.parent} "
                               "(not run, or run before models were saved)")
    else:
        found = list((Path(integrated_dir) / MODELS_DIR).glob(f"run=*/{MANIFEST}"))
        if not found:
            raise ExplainError(f"no reconcile run has saved its link models under {integrated_dir / MODELS_DIR}")
        path = max(found, key=lambda p: json.loads(p.read_text(encoding="utf-8"))["written_at"])
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["dir"] = str(path.parent)
    return manifest


# --- one link --------------------------------------------------------------------------------------------


@dataclass
class WaterfallStep:
    """One bar of Splink's waterfall: the prior, one comparison (or its term-frequency adjustment)."""

    comparison: str
    level: str
    source_value: str
    registry_value: str
    bayes_factor: float
    match_weight: float


@dataclass
class Explanation:
    dataset: str
    record_key: str
    run_id: str
    method: str
    band: str
    score: float | None
    linked_to: str | None  # masked citizen ID / person key, or the enterprise code
    rule: str | None = None
    model_path: str | None = None
    steps: list[WaterfallStep] = field(default_factory=list)
    total_match_weight: float | None = None
    probability: float | None = None
    runner_up: dict[str, Any] | None = None
    bands: dict[str, float] = field(default_factory=dict)
    svg_path: str | None = None
    notes: list[str] = field(default_factory=list)


def explain_link(dataset: str, record_key: str, *, run_id: str | None = None, svg: Path | None = None,
                 integrated_dir: Path | None = None) -> Explanation:
    """Explain the link of one source record (its key in `LINK_DATASETS[dataset].key_format`)."""
    if dataset not in LINK_DATASETS:
        raise UnknownDataset(f"unknown link dataset {dataset!r}: explain-link knows {', '.join(LINK_DATASETS)}")
    spec = LINK_DATASETS[dataset]
    if integrated_dir is None:
        from lienthong.settings import load_settings

        integrated_dir = load_settings().integrated_dir
    manifest = run_manifest(integrated_dir, run_id)
    path = manifest["outputs"].get(dataset)
    if not path or not (zones.is_table(path) or Path(path).is_file()):
        raise ExplainError(f"{dataset} of reconcile run {manifest['run_id']!r} is not on disk ({path})")
    with session(purpose="explain-link") as con:
        zones.register(con, "links", path)
        rel = con.execute(f"SELECT * FROM links WHERE {spec.key_sql} = ? LIMIT 1", [record_key])
        cols = [d[0] for d in rel.description]
        row = rel.fetchone()
    if row is None:
        raise LinkNotFound(f"no link for record key {record_key!r} in {dataset} of reconcile run "
                           f"{manifest['run_id']!r} (keys are written {spec.key_format})")
    link = dict(zip(cols, row, strict=True))
    organisation = link.get("holder_type") == "TO_CHUC"
    target = link.get("enterprise_code") if organisation else (link.get("citizen_id") or link.get("person_key"))
    out = Explanation(dataset=dataset, record_key=record_key, run_id=manifest["run_id"], method=link["method"],
                      band=link["band"], score=link["score"], bands=manifest.get("bands", {}),
                      linked_to=target if organisation else mask_id(target))
    if organisation:
        out.rule = _organisation_rule(link)
    elif link["method"] in PERSON_RULES:
        out.rule = PERSON_RULES[link["method"]]
    elif link["method"] == "probabilistic":
        _explain_probabilistic(out, spec, manifest, citizen_id=link.get("citizen_id"), svg=svg)
    else:
        out.rule = f"method {link['method']!r} (no explanation known for it)"
    return out


def _organisation_rule(link: dict[str, Any]) -> str:
    if link["method"] == "exact_id":
        return ORGANISATION_RULES["exact_id"]
    score = link["score"]
    if link["band"] == "reject" or score is None:
        return ORGANISATION_RULES["name_address_reject"]
    if link["band"] == "accept":
        return ORGANISATION_RULES["name_address_accept"]
    if score >= 0.9:
        return ORGANISATION_RULES["name_address_one"]
    return ORGANISATION_RULES["name_address_many"].format(n=round(1 / score))


def _source_record(spec: LinkDataset, staged_path: str, record_key: str) -> pa.Table:
    """The left record in the person shape, mapped exactly as `reconcile.run.reconcile_tables` maps it."""
    from lienthong import zones
    from lienthong.reconcile import sources

    table = zones.read_table(staged_path)
    if spec.source == "legal_representative":
        table = table.filter(pc.equal(sources.representative_key(table), record_key))
        return sources.representatives_as_people(table)
    table = table.filter(pc.equal(sources.holder_key(table), record_key))
    table = table.filter(pc.invert(pc.fill_null(table["deleted"], False)))
    table = table.filter(pc.equal(table["holder_type"], "CA_NHAN"))
    return sources.holders_as_people(table)


def _masked(record: dict[str, Any]) -> dict[str, Any]:
    """A scored pair with every value column (`<column>_l`, `<column>_r`) masked by its column's name."""
    from lienthong.reconcile.people import PERSON_COLUMNS

    out = dict(record)
    for column in PERSON_COLUMNS:
        for side in ("_l", "_r"):
            if column + side in out:
                out[column + side] = mask_by_key(column, out[column + side])
    return out


def _explain_probabilistic(out: Explanation, spec: LinkDataset, manifest: dict[str, Any], *,
                           citizen_id: str | None, svg: Path | None) -> None:
    from splink import DuckDBAPI

    from lienthong.reconcile import sources
    from lienthong.reconcile.people import PERSON_COLUMNS, name_frequencies, register_frequencies, score_rest

    entry = manifest["models"].get(spec.model)
    if entry is None:
        raise ExplainError(f"reconcile run {manifest['run_id']!r} saved no {spec.model} model")
    model_path = Path(manifest["dir"]) / entry["file"]
    out.model_path = str(model_path)
    text = model_path.read_text(encoding="utf-8")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry["sha256"]:
        out.notes.append(f"the model file {model_path} is not the one the run wrote (sha256 differs)")
    # The chart and the waterfall need the comparison columns kept: two output flags of Splink's settings,
    # which change what `predict` returns, not the weights.
    settings = {**json.loads(text), "retain_matching_columns": True, "retain_intermediate_calculation_columns": True}
    for name in (spec.source, "citizen"):
        found = manifest["inputs"].get(name, "")
        if not (zones.is_table(found) or Path(found).is_file()):
            raise ExplainError(f"the staged {name} file reconcile run {manifest['run_id']!r} read is gone "
                               f"({manifest['inputs'].get(name)}): the link cannot be rescored")
    left = _source_record(spec, manifest["inputs"][spec.source], out.record_key)
    if left.num_rows != 1:
        raise ExplainError(f"record {out.record_key!r} is {left.num_rows} rows in the staged {spec.source} file")
    registry = sources.citizens_as_people(zones.read_table(manifest["inputs"]["citizen"]))

    # The scoring step of the run (`people.score_rest`) for this one record: the same tables, term
    # frequencies from the same registry, the same threshold.
    with session(purpose="explain-link") as con:
        con.register("l_in", left.select(PERSON_COLUMNS))
        con.register("r_in", registry.select(PERSON_COLUMNS))
        con.execute("CREATE TABLE l_rest AS SELECT * FROM l_in")
        con.execute("CREATE TABLE r AS SELECT * FROM r_in")
        db = DuckDBAPI(connection=con)
        # the frequencies frozen with the model; a run saved before models were persisted recomputes them
        # from its registry, as it did then
        tf_file = entry.get("tf_file")
        tf = pq.read_table(tf_file) if tf_file and Path(tf_file).is_file() else name_frequencies(con)
        linker, pred = score_rest(db, settings, register_frequencies(con, db, tf))
        pairs = pred.as_record_list()

    def right_id(p: dict[str, Any]) -> str:
        return p["unique_id_r"] if p["source_dataset_l"] == "left_rest" else p["unique_id_l"]

    pairs.sort(key=lambda p: (-p["match_weight"], right_id(p)))  # the ranking of `_probabilistic_links`
    if not pairs:
        out.notes.append("the model finds no candidate above the scoring threshold for this record")
        return
    chosen = next((p for p in pairs if right_id(p) == citizen_id), None) if citizen_id else pairs[0]
    if chosen is None:
        raise ExplainError(f"rescoring record {out.record_key!r} with the saved model does not pair it with the "
                           f"linked citizen {mask_id(citizen_id)}")
    out.linked_to = mask_id(right_id(chosen))
    others = [p for p in pairs if p is not chosen]
    if others:
        margin = chosen["match_weight"] - others[0]["match_weight"]
        out.runner_up = {"citizen": mask_id(right_id(others[0])), "match_weight": others[0]["match_weight"],
                         "probability": others[0]["match_probability"], "margin_bits": margin}

    masked = _masked(chosen)
    chart = linker.visualisations.waterfall_chart([masked], filter_nulls=False)
    registry_on_left = chosen["source_dataset_l"] != "left_rest"
    for bar in chart.chart_data:
        if bar["column_name"] == "Final score":
            continue
        values = (str(bar["value_l"]), str(bar["value_r"]))
        if registry_on_left:
            values = values[::-1]
        out.steps.append(WaterfallStep(
            comparison="prior" if bar["column_name"] == "Prior" else bar["column_name"],
            level=bar["label_for_charts"] or "", source_value=values[0], registry_value=values[1],
            bayes_factor=float(bar["bayes_factor"]), match_weight=float(bar["log2_bayes_factor"])))
    out.total_match_weight = float(chosen["match_weight"])
    out.probability = float(chosen["match_probability"])
    if out.score is not None and not math.isclose(out.probability, out.score, rel_tol=1e-6, abs_tol=1e-9):
        out.notes.append(f"the run recorded score {out.score:.6f}; the saved model gives {out.probability:.6f} now")
    if svg is not None:
        svg.parent.mkdir(parents=True, exist_ok=True)
        chart.save(str(svg))  # Altair renders SVG through vl-convert
        out.svg_path = str(svg)


# --- text ------------------------------------------------------------------------------------------------


def render(e: Explanation) -> str:
    """The explanation as the text `lienthong explain-link` prints."""
    score = "none" if e.score is None else f"{e.score:.6f}"
    lines = [f"{e.dataset} {e.record_key} (reconcile run {e.run_id}): method {e.method}, band {e.band}, "
             f"score {score}",
             f"linked to: {e.linked_to or 'nothing (no candidate)'}"]
    if e.rule:
        lines.append(f"rule: {e.rule}")
    if e.model_path:
        lines.append(f"model: {e.model_path}")
    if e.steps:
        head = ("comparison", "level that fired", "source record", "registry record", "bayes factor", "match weight")
        rows = [(s.comparison, s.level, s.source_value, s.registry_value, f"{s.bayes_factor:.6g}",
                 f"{s.match_weight:+.4f}") for s in e.steps]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines.append("")
        for r in [head, *rows]:
            lines.append("  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                 strict=True))).rstrip())
        lines.append("")
        lines.append(f"total match weight: {e.total_match_weight:+.4f}")
        lines.append(f"match probability: {e.probability:.6f}")
        if e.bands:
            lines.append(f"bands: accept >= {e.bands.get('accept')} with a margin >= {e.bands.get('min_margin_bits')} "
                         f"bits over the runner-up, review >= {e.bands.get('review')}")
    if e.runner_up:
        ru = e.runner_up
        lines.append(f"runner-up: {ru['citizen']}, match weight {ru['match_weight']:+.4f} "
                     f"(probability {ru['probability']:.6f}), margin {ru['margin_bits']:.4f} bits")
    elif e.method == "probabilistic" and e.steps:
        lines.append("runner-up: none above the scoring threshold")
    lines.extend(f"note: {n}" for n in e.notes)
    if e.svg_path:
        lines.append(f"waterfall chart: {e.svg_path}")
    return "\n".join(lines)
