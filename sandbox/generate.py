"""Command line for the synthetic province (or country) generator: `python -m sandbox.generate`.

Owns only argument parsing and the printed summary; the work is `sandbox.generator.generate`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sandbox.generator import (
    COUNTRY_DEFAULTS,
    NOISE_DEFAULTS,
    CountryConfig,
    GeneratorConfig,
    country_provinces,
    generate,
)


def _rate(known: dict[str, float], what: str) -> Callable[[str], tuple[str, float]]:
    def parse(value: str) -> tuple[str, float]:
        name, sep, rate = value.partition("=")
        if not sep or name not in known:
            raise argparse.ArgumentTypeError(f"expected NAME=RATE with NAME a {what} in {sorted(known)}: {value!r}")
        try:
            return name, float(rate)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"rate is not a number: {value!r}") from exc
    return parse


_noise = _rate(NOISE_DEFAULTS, "noise")


def _provinces(value: str) -> tuple[str, ...]:
    """'3' -> the first three provinces of a country (a bare number is a count: a country has at least two
    provinces); '31,01,79' -> those codes."""
    if "," not in value:
        try:
            return country_provinces(int(value))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _config(p: argparse.ArgumentParser, args: argparse.Namespace,
            defaults: GeneratorConfig) -> GeneratorConfig | CountryConfig:
    noise = {**NOISE_DEFAULTS, **dict(args.noise)}
    if args.country is not None:
        if args.province is not None or args.land_provinces is not None:
            p.error("--province and --land-provinces are for one province; a country has its own (--country)")
        return CountryConfig(
            provinces=args.country, citizens=args.citizens, seed=args.seed, as_of=args.as_of, noise=noise,
            citizens_per_province=({c: args.per_province for c in args.country}
                                   if args.per_province is not None else None),
            rates={**COUNTRY_DEFAULTS, **dict(args.country_rate)},
        )
    if args.per_province is not None or args.country_rate:
        p.error("--per-province and --country-rate need --country")
    land = args.land_provinces if args.land_provinces is not None else ",".join(defaults.land_provinces)
    return GeneratorConfig(
        seed=args.seed, citizens=args.citizens, province=args.province or defaults.province,
        land_provinces=tuple(x.strip() for x in land.split(",") if x.strip()), as_of=args.as_of, noise=noise,
    )


def main(argv: Sequence[str] | None = None) -> int:
    defaults = GeneratorConfig()
    p = argparse.ArgumentParser(prog="python -m sandbox.generate", description=__doc__)
    p.add_argument("--citizens", type=int, default=defaults.citizens,
                   help="citizens of the province; with --country, of the whole country (split by population)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--province", default=None, help=f"2025 province code of the registries (default {defaults.province})")
    p.add_argument("--land-provinces", default=None,
                   help=f"comma-separated province codes, one land database each (default {','.join(defaults.land_provinces)})")
    p.add_argument("--noise", type=_noise, action="append", default=[], metavar="NAME=RATE",
                   help="override one noise rate (repeatable)")
    p.add_argument("--as-of", default=defaults.as_of, help="reference time, RFC 3339 with offset")
    p.add_argument("--country", type=_provinces, default=None, metavar="N|CODES",
                   help="a country: N provinces (31 Hải Phòng, then by population) or comma-separated 2025 codes; "
                        "national registries, one land database per province")
    p.add_argument("--per-province", type=int, default=None, metavar="N",
                   help="with --country: N citizens in every province instead of splitting --citizens")
    p.add_argument("--country-rate", type=_rate(COUNTRY_DEFAULTS, "country rate"), action="append", default=[],
                   metavar="NAME=RATE", help="with --country: override one cross-province rate (repeatable)")
    args = p.parse_args(argv)
    try:
        config = _config(p, args, defaults)
    except ValueError as exc:
        p.error(str(exc))
    summary = generate(config, args.out)
    width = max(len(k) for k in summary["counts"])
    for name, rows in summary["counts"].items():
        print(f"{name:<{width}}  {rows:>12,}")
    print(f"{'source rows':<{width}}  {summary['source_rows']:>12,}")
    for name, c in summary.get("country_counts", {}).items():
        share = c["applied"] / c["eligible"] if c["eligible"] else 0.0
        print(f"{name:<{width}}  {c['applied']:>12,} of {c['eligible']:,} ({share:.2%})")
    print(f"generated in {summary['seconds']:.1f} s, {summary['rows_per_second']:,.0f} source rows/s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
