"""Benchmark of the synthetic province generator: time, rows per second and peak memory at scale.

Usage: `.venv/bin/python benchmarks/bench_generator.py [--citizens 1000000] [--seed S] [--out DIR]`.
Writes benchmarks/results/generator.json (citizens, rows per file, seconds, rows/s, peak RSS) and prints
it. The output folder is a temporary one unless --out is given (it is removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.generator import GeneratorConfig, generate  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--citizens", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=GeneratorConfig().seed)
    p.add_argument("--out", help="keep the generated files here")
    p.add_argument("--result", default=str(REPO / "benchmarks" / "results" / "generator.json"))
    args = p.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-generator-"))
    try:
        summary = generate(GeneratorConfig(citizens=args.citizens, seed=args.seed), out)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    result = {
        "citizens": args.citizens,
        "seed": args.seed,
        "rows": summary["counts"],
        "source_rows": summary["source_rows"],
        "seconds": summary["seconds"],
        "rows_per_second": summary["rows_per_second"],
        "citizens_per_second": round(args.citizens / summary["seconds"], 1),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_mib": round(size / 2**20, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
