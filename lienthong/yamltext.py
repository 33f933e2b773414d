"""Reading YAML text (contracts, agencies, catalogues): one safe loader for the whole project.

Owns the choice of loader: PyYAML's safe loader built on libyaml (`CSafeLoader`) when PyYAML was built
with it, which reads the contracts about eight times faster than the pure-Python one (every ingestion and
pipeline task loads them), else the pure-Python `SafeLoader`. Both build plain Python objects only (no
arbitrary tags) and raise `yaml.YAMLError` with a `problem_mark` for text that is not YAML.
"""

from __future__ import annotations

from typing import Any

import yaml

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """`yaml.safe_load` with the C loader when available."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, chosen above
