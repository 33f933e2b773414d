"""The `lienthong` command (`python -m lienthong.cli` works too): one subcommand per task an engineer or an
auditor does by hand. Each subcommand is a `register_<name>(subparsers)` function that adds its parser and
sets `run` to a function taking the parsed arguments and returning the exit code; add new ones to
`COMMANDS`.

    lienthong lineage <dataset> [--version N] [--json]   where a published version came from
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


COMMANDS: list[Callable[[Any], None]] = [register_lineage]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lienthong", description="The inter-agency data platform's command line.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
