"""The `lienthong` command (`python -m lienthong.cli` works too): one subcommand per task an engineer or an
auditor does by hand. Each subcommand is a `register_<name>(subparsers)` function that adds its parser and
sets `run` to a function taking the parsed arguments and returning the exit code; add new ones to
`COMMANDS`.

    lienthong lineage <dataset> [--version N] [--json]   where a published version came from
    lienthong report [--run RUN_ID] [--publish-run ID]   (re)write the audit report of an integrate run
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


COMMANDS: list[Callable[[Any], None]] = [register_lineage, register_report]


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
