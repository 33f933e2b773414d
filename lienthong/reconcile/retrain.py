"""Retraining the person-link models: the `lienthong retrain-models` command and the `retrain_link_models`
DAG, never a side effect of a daily reconciliation.

Owns the retraining run and its before/after comparison:

- what it trains on: the staged versions the last successful reconciliation read (its ledger
  `metrics.inputs`), so the comparison is with links a consumer has seen;
- before: the link state that reconciliation left (`metrics.link_state.refs`) when it was linked with the
  models active now, else everything relinked with the active models in a scratch folder; after: everything
  relinked with newly trained models in another scratch folder (`linkstate.update(..., bases=None,
  models={})`). Both scratch folders are removed at the end; the zones are not touched;
- the comparison per link type (`compare_links`, `compare_parameters`): links per method and band, accepted
  links gained / lost / moved to another citizen, review counts, the Splink m/u parameters that moved most,
  and with a ground truth (`lienthong.linkscore`'s format) precision / recall / F1 before and after;
- the new models are saved (`models.save`) as `candidate`, or as `active` (which makes the next
  reconciliation relink everything with them, because its models then differ from the ones the link state
  was linked with); a candidate is activated later with `activate`;
- the comparison as JSON at `<reports>/retrain/<run id>.json`: counts, model ids, parameters and staged
  version references only, never a personal value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lienthong.paths import safe_run_id, write_json
from lienthong.private_files import writes_data_dir
from lienthong.settings import Settings, load_settings

if TYPE_CHECKING:
    from lienthong.reconcile.people import LinkModel

log = logging.getLogger(__name__)

REPORT_DIR = "retrain"
TOP_PARAMETERS = 10
METHODS = ("exact_id", "legacy_id", "probabilistic")
BANDS = ("accept", "review", "reject")
# what the accuracy report keeps of `linkscore` per link type (counts and rates only)
ACCURACY_FIELDS = ("linkable", "accepted", "true_positives", "false_positives", "review", "precision", "recall", "f1")


class NoReconciliation(LookupError):
    """Nothing to retrain on: no reconciliation finished yet."""


class UnknownModel(LookupError):
    """The ledger holds no link model of that id (for that link type)."""


def report_path(reports_dir: Path, run_id: str) -> Path:
    return Path(reports_dir) / REPORT_DIR / f"{safe_run_id(run_id)}.json"


# --- the comparison (pure) ----------------------------------------------------------------------------------


def _link_types() -> dict[str, str]:
    from lienthong.reconcile.linkstate import LEFT_DATASETS

    return dict(LEFT_DATASETS)


def _band_counts(links: pa.Table) -> dict[str, int]:
    out = {f"{m}_{b}": 0 for m in METHODS for b in BANDS}
    for row in pa.TableGroupBy(links, ["method", "band"]).aggregate([("_key", "count")]).to_pylist():
        out[f"{row['method']}_{row['band']}"] = row["_key_count"]
    return out


def _true(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def compare_links(before: pa.Table, after: pa.Table) -> dict[str, dict[str, Any]]:
    """Per link type, how the links of `after` differ from those of `before` (link-state tables: `_key`,
    `dataset`, `right_id`, `method`, `band`): records, links per method and band, accepted links gained (not
    accepted before), lost (not accepted after) and moved (accepted both times, to another citizen), review
    counts with how many entered and left review. Counts only."""
    columns = ["_key", "dataset", "right_id", "method", "band"]
    out: dict[str, dict[str, Any]] = {}
    for dataset, link_type in _link_types().items():
        b = before.select(columns).filter(pc.equal(before["dataset"], dataset))
        a = after.select(columns).filter(pc.equal(after["dataset"], dataset))
        if b.num_rows == 0 and a.num_rows == 0:
            continue
        j = b.drop_columns(["dataset"]).join(a.drop_columns(["dataset"]), keys="_key", join_type="full outer",
                                             left_suffix="_before", right_suffix="_after")
        acc_b, acc_a = pc.equal(j["band_before"], "accept"), pc.equal(j["band_after"], "accept")
        rev_b, rev_a = pc.equal(j["band_before"], "review"), pc.equal(j["band_after"], "review")
        not_acc_b, not_acc_a = pc.invert(pc.fill_null(acc_b, False)), pc.invert(pc.fill_null(acc_a, False))
        counts_b, counts_a = _band_counts(b), _band_counts(a)
        out[link_type] = {
            "records": {"before": b.num_rows, "after": a.num_rows},
            "links": {k: {"before": counts_b[k], "after": counts_a[k], "change": counts_a[k] - counts_b[k]}
                      for k in counts_b},
            "accepted": {
                "before": _true(acc_b), "after": _true(acc_a),
                "gained": _true(pc.and_(acc_a, not_acc_b)),
                "lost": _true(pc.and_(acc_b, not_acc_a)),
                "moved": _true(pc.and_(pc.and_(acc_b, acc_a), pc.not_equal(j["right_id_before"], j["right_id_after"]))),
            },
            "review": {
                "before": _true(rev_b), "after": _true(rev_a),
                "entered": _true(pc.and_(rev_a, pc.invert(pc.fill_null(rev_b, False)))),
                "left": _true(pc.and_(rev_b, pc.invert(pc.fill_null(rev_a, False)))),
            },
        }
    return out


def _levels(splink: dict[str, Any] | None) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    out: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for comparison in (splink or {}).get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            if level.get("is_null_level"):
                continue
            out[(comparison.get("output_column_name", "?"), level.get("label_for_charts", "?"))] = (
                level.get("m_probability"), level.get("u_probability"))
    return out


def _weight(m: float | None, u: float | None) -> float | None:
    return math.log2(m / u) if m and u else None


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def compare_parameters(before: dict[str, Any] | None, after: dict[str, Any] | None,
                       top: int = TOP_PARAMETERS) -> dict[str, Any]:
    """The Splink parameters (Splink's model JSON) that moved most: per comparison level m, u and the match
    weight log2(m/u) before and after, the `top` levels whose m or u moved, the largest change of weight first
    (a level estimated on one side only counts as the largest change), and the prior."""
    lb, la = _levels(before), _levels(after)
    rows = []
    for key in [*lb, *(k for k in la if k not in lb)]:
        (mb, ub), (ma, ua) = lb.get(key, (None, None)), la.get(key, (None, None))
        wb, wa = _weight(mb, ub), _weight(ma, ua)
        if wb is not None and wa is not None:
            change: float | None = wa - wb
            rank = abs(wa - wb)
        else:
            change = None
            rank = math.inf if (wb is None) != (wa is None) else 0.0
        rows.append((rank, {"comparison": key[0], "level": key[1], "m_before": _r(mb), "m_after": _r(ma),
                            "u_before": _r(ub), "u_after": _r(ua), "weight_before": _r(wb), "weight_after": _r(wa),
                            "weight_change": None if change is None else round(change, 3)}))
    # a level whose m and u are the same (to 4 significant digits) did not move: not listed
    moved = [(rank, r) for rank, r in rows if (r["m_before"], r["u_before"]) != (r["m_after"], r["u_after"])]
    moved.sort(key=lambda r: -r[0])
    prior = "probability_two_random_records_match"
    return {"prior": {"before": _r((before or {}).get(prior)), "after": _r((after or {}).get(prior))},
            "levels": len(rows), "levels_moved": len(moved), "moved_most": [r for _, r in moved[:top]]}


def _close(a: Any, b: Any) -> bool:
    """Equal JSON values, numbers to 1e-9 relative (the same training can differ in the last bits: DuckDB's
    parallel sums do not add in a fixed order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    return bool(a == b)


def same_model(a: LinkModel, b: LinkModel) -> bool:
    """The same parameters and frozen name frequencies (to 1e-9 relative). Not `model_id` equality: Splink's
    model JSON carries the random `linker_uid` of the Linker that trained it, and the same training can differ
    in the last bits, so two trainings on the same data never share an id."""
    pa_, pb = ({k: v for k, v in m.splink.items() if k != "linker_uid"} for m in (a, b))
    ta, tb = a.tf.sort_by("name_fold"), b.tf.sort_by("name_fold")
    return (_close(pa_, pb) and ta["name_fold"].equals(tb["name_fold"])
            and _close(ta["tf_name_fold"].to_pylist(), tb["tf_name_fold"].to_pylist()))


# --- the run ------------------------------------------------------------------------------------------------


def _readable(reference: str | None) -> bool:
    from lienthong import zones

    return bool(reference) and zones.readable(reference or "")
    try:
        zones.open_table(reference)
        return True
    except Exception:  # vacuumed or removed: relink instead
        return False


def _accuracy(staged: dict[str, pa.Table], links_ref: str, truth_dir: Path, settings: Settings) -> dict[str, Any]:
    """Precision / recall / F1 per person link type of the integrated link tables these links give (the same
    reconciliation the daily run does, ID-less holders included), judged by `linkscore.link_accuracy`."""
    from lienthong.linkscore import link_accuracy
    from lienthong.reconcile.run import _person_links, reconcile_tables

    tables, _, _ = reconcile_tables(staged, settings, person_links=_person_links(links_ref))
    acc = link_accuracy(tables, staged["citizen"], staged["enterprise"], truth_dir, staged_holders=staged["land_holder"])
    out = {t: {k: acc[t][k] for k in ACCURACY_FIELDS} for t in ("representative_citizen", "holder_citizen")}
    if "holder_citizen_idless" in acc:
        out["holder_citizen_idless"] = {k: acc["holder_citizen_idless"][k] for k in ACCURACY_FIELDS}
    return out


@writes_data_dir
def retrain(settings: Settings | None = None, *, run_id: str, activate: bool = False,
            truth_dir: str | Path | None = None) -> dict[str, Any]:
    """Train new person-link models on the staged versions the last successful reconciliation read, compare
    their links with the active models' (module docstring), save them as `candidate` (or `active`), and write
    the comparison to `<reports>/retrain/<run id>.json`. Returns the comparison.

    A retrained model with the active one's parameters and name frequencies (`same_model`) is not saved:
    nothing changes.
    Raises `NoReconciliation` when no reconciliation finished yet."""
    from lienthong import runs, zones
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import linkstate, models
    from lienthong.reconcile.people import LinkBands
    from lienthong.reconcile.run import _read_staged

    s = settings or load_settings()
    url = warehouse_url(s)
    t0 = time.monotonic()
    with connect(url) as conn:
        last = runs.latest_reconcile_run(conn)
        persisted = {t: models.active(conn, t) for t in models.LINK_TYPES}
    if last is None or not (last.metrics or {}).get("inputs"):
        raise NoReconciliation("no reconciliation has finished yet: there are no staged versions to retrain on")
    inputs = {name: info["staged_path"] for name, info in (last.metrics or {})["inputs"].items()}
    person_inputs = {n: inputs[n] for n in linkstate.PERSON_INPUTS}
    link_inputs = linkstate.link_inputs(inputs)
    active_ids = {t: p[0].model_id for t, p in persisted.items() if p is not None}
    active_models = {t: (p[1] if p is not None else None) for t, p in persisted.items()}
    state = (last.metrics or {}).get("link_state") or {}
    bands = LinkBands(accept=s.match_accept, review=s.match_review)
    scratch = s.data_dir / "tmp" / f"retrain-{uuid.uuid4().hex[:8]}"
    seconds: dict[str, float] = {}
    try:
        held = (state.get("refs") or {}).get(linkstate.LINKS)
        before_ref: str
        if state.get("models") == active_ids and held and _readable(held):
            before_ref, before_source = str(held), f"the link state reconciliation {last.run_id} left"
        else:
            log.info("retrain: the link state of %s was linked with %s, the active models are %s: relinking with "
                     "the active models", last.run_id, state.get("models"), active_ids)
            t = time.monotonic()
            before = linkstate.update(scratch / "before", link_inputs, None, active_models, run_id=run_id,
                                      settings=s, bands=bands)
            before_ref, before_source = before.refs[linkstate.LINKS], "relinked with the active models"
            seconds["relink_before"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        after = linkstate.update(scratch / "after", link_inputs, None, {}, run_id=run_id, settings=s, bands=bands)
        seconds["train_and_relink"] = round(time.monotonic() - t, 3)
        link_cmp = compare_links(zones.read_table(before_ref), zones.read_table(after.refs[linkstate.LINKS]))
        accuracy: dict[str, dict[str, Any]] = {}
        if truth_dir is not None:
            t = time.monotonic()
            staged = {name: _read_staged(name, ref) for name, ref in inputs.items()}
            accuracy = {"before": _accuracy(staged, before_ref, Path(truth_dir), s),
                        "after": _accuracy(staged, after.refs[linkstate.LINKS], Path(truth_dir), s)}
            seconds["accuracy"] = round(time.monotonic() - t, 3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    path = report_path(s.reports_dir, run_id)
    link_types: dict[str, Any] = {}
    for link_type in models.LINK_TYPES:
        new = after.trained.get(link_type)
        old = active_models.get(link_type)
        entry: dict[str, Any] = {"model_before": active_ids.get(link_type),
                                 "model_after": new.model_id if new is not None else None}
        if new is None:
            entry["status"] = "not trained (no record left for the model to score)"
        elif old is not None and same_model(new, old):
            # not saved: activating it would only relink everything to the same links
            entry["status"] = "unchanged (the same parameters and name frequencies as the active model)"
        else:
            entry["status"] = "active" if activate else "candidate"
        entry.update(link_cmp.get(link_type, {}))
        entry["parameters"] = compare_parameters(old.splink if old is not None else None,
                                                 new.splink if new is not None else None)
        if accuracy:
            entry["accuracy"] = {"before": accuracy["before"].get(link_type), "after": accuracy["after"].get(link_type)}
            if link_type == "holder_citizen" and "holder_citizen_idless" in accuracy["after"]:
                entry["accuracy_idless"] = {"before": accuracy["before"].get("holder_citizen_idless"),
                                            "after": accuracy["after"]["holder_citizen_idless"]}
        link_types[link_type] = entry
    saved = {t: e["model_after"] for t, e in link_types.items() if e["status"] in ("active", "candidate")}
    with connect(url) as conn:
        for link_type in saved:
            models.save(conn, s.integrated_dir, link_type, after.trained[link_type], run_id=run_id, activate=activate,
                        summary={"retrained_on": person_inputs, "reconcile_run_id": last.run_id,
                                 "compared_with": active_ids.get(link_type), "comparison": str(path)})
    if not saved:
        next_step = "no model changed: the active models stay"
    elif activate:
        next_step = ("activated: the next reconciliation (the integrate DAG's, when a staged dataset changed) "
                     "relinks every person record with the new models")
    else:
        next_step = ("saved as candidates: review this comparison, then activate with `lienthong link-models "
                     "--activate <link type> <model id>`; the daily reconciliation keeps the active models")
    report = {
        "run_id": run_id, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reconcile_run_id": last.run_id, "trained_on": person_inputs, "before": before_source,
        "activate": activate, "truth": truth_dir is not None, "link_types": link_types, "next": next_step,
        "seconds": seconds | {"total": round(time.monotonic() - t0, 3)}, "report": str(path),
    }
    write_json(path, report, indent=1, sort_keys=False)
    log.info("retrain %s: %s; %s; comparison at %s", run_id,
             {t: (e["model_before"], e["model_after"], e["status"]) for t, e in link_types.items()}, next_step, path)
    return report


def activate(settings: Settings | None, link_type: str, model_id: str) -> Any:
    """Make a persisted model (a retraining's candidate, or a retired one) the active model of its link type,
    retiring the one in use; the next reconciliation relinks everything with it. Returns its ledger record.
    Raises `UnknownModel` when the ledger has no such model, `models.ModelError` when its files are not the
    ones recorded."""
    from lienthong import runs
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile import models

    if link_type not in models.LINK_TYPES:
        raise UnknownModel(f"unknown link type {link_type!r}: one of {', '.join(models.LINK_TYPES)}")
    s = settings or load_settings()
    with connect(warehouse_url(s)) as conn:
        found = [r for r in runs.link_models(conn, link_type) if r.model_id == model_id]
        if not found:
            raise UnknownModel(f"no link model {model_id!r} of link type {link_type!r} in the ledger "
                               "(`lienthong link-models` lists them)")
        record = found[0]
        if record.status == "active":
            log.info("link model %s %s is already active", link_type, model_id)
            return record
        models.load(record)  # its files are there and are the ones recorded: never activate a model that cannot load
        runs.record_link_model(conn, dataclasses.replace(record, status="active"))
        active = runs.active_link_model(conn, link_type)
    log.info("link model %s %s activated: the next reconciliation relinks everything with it", link_type, model_id)
    return active


def render(report: dict[str, Any], parameters: int = 5) -> str:
    """The comparison as the text `lienthong retrain-models` prints."""

    def v(x: float | None) -> str:
        return "-" if x is None else f"{x:g}"

    def prf(acc: dict[str, Any] | None) -> str:
        return "-" if not acc else f"{acc['precision']:.4f} / {acc['recall']:.4f} / {acc['f1']:.4f}"

    lines = [f"retrain {report['run_id']}: trained on the staged versions of reconciliation "
             f"{report['reconcile_run_id']}; before = {report['before']}"]
    for link_type, e in report["link_types"].items():
        lines.append(f"{link_type}: {e['model_before'] or '-'} -> {e['model_after'] or '-'} ({e['status']})")
        if "links" in e:
            lines.append(f"  {'method_band':<22}{'before':>8}{'after':>8}{'change':>8}")
            for name, c in e["links"].items():
                if c["before"] or c["after"]:
                    lines.append(f"  {name:<22}{c['before']:>8}{c['after']:>8}{c['change']:>+8}")
            a, r = e["accepted"], e["review"]
            lines.append(f"  accepted {a['before']} -> {a['after']}: gained {a['gained']}, lost {a['lost']}, "
                         f"moved to another citizen {a['moved']}; review {r['before']} -> {r['after']} "
                         f"(entered {r['entered']}, left {r['left']})")
        p = e["parameters"]
        lines.append(f"  prior {v(p['prior']['before'])} -> {v(p['prior']['after'])}; m/u moved in "
                     f"{p['levels_moved']} of {p['levels']} comparison levels"
                     + (", most:" if p["moved_most"] else ""))
        for lv in p["moved_most"][:parameters]:
            change = "" if lv["weight_change"] is None else f" ({lv['weight_change']:+.3f})"
            lines.append(f"    {lv['comparison'] + ' / ' + lv['level']:<44} m {v(lv['m_before'])} -> "
                         f"{v(lv['m_after'])}  u {v(lv['u_before'])} -> {v(lv['u_after'])}  weight "
                         f"{v(lv['weight_before'])} -> {v(lv['weight_after'])}{change}")
        if "accuracy" in e:
            lines.append(f"  precision / recall / F1: {prf(e['accuracy']['before'])} -> {prf(e['accuracy']['after'])}")
        if "accuracy_idless" in e:
            lines.append(f"  ID-less holders P / R / F1: {prf(e['accuracy_idless']['before'])} -> "
                         f"{prf(e['accuracy_idless']['after'])}")
    lines.append(f"comparison: {report['report']}")
    lines.append(report["next"])
    return "\n".join(lines)
