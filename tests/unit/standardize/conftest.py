"""One small synthetic province for the standardization tests, generated once per session.

Every noise the standardization functions handle is raised to 0.1 so a 1,000-citizen province (about a
second to generate) carries dozens of each; truth/noise.parquet says which value was changed and how.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.generator import NOISE_DEFAULTS, GeneratorConfig, generate

RATES = {name: 0.1 for name in NOISE_DEFAULTS}


@pytest.fixture(scope="session")
def province(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("standardize-province")
    generate(GeneratorConfig(citizens=1000, noise=RATES), folder)
    return folder


@pytest.fixture(scope="session")
def noise(province: Path) -> pa.Table:
    return pq.read_table(province / "truth" / "noise.parquet")
