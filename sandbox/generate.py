"""Command line for the synthetic province generator: `python -m sandbox.generate`.

Owns only argument parsing and the printed summary; the work is `sandbox.generator.generate`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sandbox.generator import NOISE_DEFAULTS, GeneratorConfig, generate


def _noise(value: str) -> tuple[str, float]:
    name, sep, rate = value.partition("=")
    if not sep or name not in NOISE_DEFAULTS:
        raise argparse.ArgumentTypeError(f"expected NAME=RATE with NAME in {sorted(NOISE_DEFAULTS)}: {value!r}")
    try:
        return name, float(rate)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"rate is not a number: {value!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    defaults = GeneratorConfig()
    p = argparse.ArgumentParser(prog="python -m sandbox.generate", description=__doc__)
    p.add_argument("--citizens", type=int, default=defaults.citizens)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--province", default=defaults.province, help="2025 province code of the registries")
    p.add_argument("--land-provinces", default=",".join(defaults.land_provinces),
                   help="comma-separated province codes, one land database each")
    p.add_argument("--noise", type=_noise, action="append", default=[], metavar="NAME=RATE",
                   help="override one noise rate (repeatable)")
    p.add_argument("--as-of", default=defaults.as_of, help="reference time, RFC 3339 with offset")
    args = p.parse_args(argv)
    config = GeneratorConfig(
        seed=args.seed, citizens=args.citizens, province=args.province,
        land_provinces=tuple(x.strip() for x in args.land_provinces.split(",") if x.strip()),
        as_of=args.as_of, noise={**NOISE_DEFAULTS, **dict(args.noise)},
    )
    summary = generate(config, args.out)
    width = max(len(k) for k in summary["counts"])
    for name, rows in summary["counts"].items():
        print(f"{name:<{width}}  {rows:>12,}")
    print(f"{'source rows':<{width}}  {summary['source_rows']:>12,}")
    print(f"generated in {summary['seconds']:.1f} s, {summary['rows_per_second']:,.0f} source rows/s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
