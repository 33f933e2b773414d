"""Integration fixtures: one generated province and one running sandbox (real HTTP servers on localhost,
real PostgreSQL) per test session, shared by the sandbox and connector tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.generator import GeneratorConfig, generate
from sandbox.runner import SandboxEndpoints, run_sandbox


@pytest.fixture(scope="session")
def sandbox_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated province (the real generator, so the servers are tested on the real file shapes)."""
    out = tmp_path_factory.mktemp("sandbox-data")
    generate(GeneratorConfig(citizens=300), out)
    return out


@pytest.fixture(scope="session")
def sandbox_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a short name: the land PostgreSQL puts its socket under it and socket paths are length-limited
    return tmp_path_factory.mktemp("sbx")


@pytest.fixture(scope="session")
def sandbox_session(sandbox_data: Path, sandbox_state: Path) -> Iterator[SandboxEndpoints]:
    with run_sandbox(sandbox_data, sandbox_state) as endpoints:
        yield endpoints


@pytest.fixture
def sandbox(sandbox_session: SandboxEndpoints) -> Iterator[SandboxEndpoints]:
    """The running sandbox, with faults off, counters at zero and record changes undone."""
    for url in (sandbox_session.population_url, sandbox_session.business_url):
        requests.post(url + "/_sandbox/reset", timeout=10).raise_for_status()
    yield sandbox_session
