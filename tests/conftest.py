"""Shared test set-up: a private Airflow home and data dir per session, so tests never touch the demo's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="lienthong-tests-"))

# Set before Airflow is imported anywhere in the test session.
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_DIR / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ.setdefault("XDG_RUNTIME_DIR", str(_SESSION_DIR / "xdg"))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
# Tests never share state with the demo or an earlier run: a private data dir (and so a private embedded
# warehouse) per session. A real server is used only when LIENTHONG_TEST_DATABASE_URL names one.
os.environ["LIENTHONG_DATA_DIR"] = str(_SESSION_DIR / "data")
if os.environ.get("LIENTHONG_TEST_DATABASE_URL"):
    os.environ["LIENTHONG_DATABASE_URL"] = os.environ["LIENTHONG_TEST_DATABASE_URL"]
else:
    os.environ.pop("LIENTHONG_DATABASE_URL", None)
_SESSION_DATA_DIR = Path(os.environ["LIENTHONG_DATA_DIR"])
# Every published version is signed: the session signs with a key made for it (an exported key wins). The
# public key reaches the keyring beside the published datasets at the first publish.
if not os.environ.get("LIENTHONG_RELEASE_SIGNING_KEY"):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    _seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    os.environ["LIENTHONG_RELEASE_SIGNING_KEY"] = base64.b64encode(_seed).decode("ascii")


def pytest_sessionfinish(session, exitstatus):
    """Stop the session's embedded warehouse (started on demand by whichever test needed it first)."""
    from lienthong.db import stop_embedded

    stop_embedded(_SESSION_DATA_DIR / "warehouse-pg")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR
