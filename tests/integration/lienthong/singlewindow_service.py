"""The single-window service as the tests run it: `python -m lienthong.singlewindow` in a subprocess on a free
localhost port, its output in a file, and a client that can call from another loopback address (127.0.0.x) to
stand for another client machine."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter


def default_purposes() -> dict[str, str]:
    """Each consuming agency's first purpose (the shipped agencies.yaml grants every dataset for it)."""
    from lienthong.access import load_agencies

    return {name: next(iter(a.purposes)) for name, a in load_agencies().items()}


DEFAULT_PURPOSE = default_purposes()


def lookup_headers(key: str, agency: str, case_id: str = "HS-TEST-0001") -> dict[str, str]:
    """The headers of a lookup by `agency` with its default purpose."""
    return {"X-API-Key": key, "X-Purpose": DEFAULT_PURPOSE[agency], "X-Case-Id": case_id}


class _FromAddress(HTTPAdapter):
    def __init__(self, source: str):
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


class Server:
    def __init__(self, base: str, log_path: Path, keys: dict[str, str], env: dict[str, str], proc: subprocess.Popen):
        self.base, self.log_path, self.keys, self.env, self.proc = base, log_path, keys, env, proc

    def get(self, path: str, agency: str | None = None, key: str | None = None, *, source: str | None = None,
            timeout: float = 30, purpose: str | None = "", case_id: str | None = "HS-TEST-0001",
            headers: dict[str, str] | None = None) -> requests.Response:
        """GET `path` with `agency`'s key (or `key`), from loopback address `source` when given. A lookup carries
        X-Purpose (`purpose`; by default the agency's first purpose, which its grants of every dataset list) and
        X-Case-Id (`case_id`); None leaves a header out."""
        headers = dict(headers or {})
        if agency or key is not None:
            headers["X-API-Key"] = key if key is not None else self.keys[agency]
        if purpose == "" and agency in DEFAULT_PURPOSE:
            purpose = DEFAULT_PURPOSE[agency]
        if purpose:
            headers["X-Purpose"] = purpose
        if case_id is not None:
            headers["X-Case-Id"] = case_id
        with requests.Session() as session:
            if source:
                session.mount("http://", _FromAddress(source))
            return session.get(self.base + path, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_service(env: dict[str, str], log_path: Path, keys: dict[str, str], *args: str,
                    secret_env: dict[str, str] | None = None) -> Iterator[Server]:
    """The service started with `env` and extra command-line `args`, stopped on exit."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lienthong.singlewindow", "--host", "127.0.0.1", "--port", "0",
                                 "--log-level", "debug", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = None
        deadline = time.monotonic() + 60
        while base is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
            base = found.group(1) if found else time.sleep(0.2)
        if base:  # with several workers, wait until one answers
            while time.monotonic() < deadline:
                try:
                    requests.get(base + "/openapi.json", timeout=5)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
        assert base, f"the service did not start:\n{log_path.read_text(errors='replace')[-3000:]}"
        yield Server(base, log_path, keys, secret_env or {}, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def service_for(url: str, secret_env: dict[str, str], names: list[str], log_dir: Path, *args: str) -> Iterator[Server]:
    """The service over warehouse `url` with a fresh API key for each of `names` (agencies, registries, portal)."""
    import json
    import os
    import secrets

    keys = {name: secrets.token_urlsafe(24) for name in names}
    env = {**os.environ, **secret_env, "LIENTHONG_DATABASE_URL": url,
           "LIENTHONG_SINGLEWINDOW_KEYS": json.dumps(keys), "PYTHONUNBUFFERED": "1"}
    with running_service(env, log_dir / "server.log", keys, "--pool-size", "2", *args, secret_env=secret_env) as server:
        yield server
