"""Who calls the single window: the API keys, the kind of caller each names, and the FastAPI dependencies that
let a route accept one kind only.

Owns `LIENTHONG_SINGLEWINDOW_KEYS` (JSON `{"<name>": "<key>"}`, else the Airflow connection
`lienthong_singlewindow` with extra `{"keys": {...}}`). A name is one of three kinds of caller:

* `agency`: a consuming agency of schemas/agencies.yaml; it looks up records (`/v1/citizens/...`,
  `/v1/enterprises/...`, `/v1/parcels/...`) through its own database role;
* `source`: an agency responsible for a registry (`lienthong.findings.AGENCIES`: population_registry,
  business_registry, land_registry); it works the discrepancy cases assigned to it (`/v1/findings/...`);
* `portal`: the citizen-facing portal (`citizen_portal`); it reads one person's data-usage history
  (`/v1/citizens/{id}/usage`) through its own database role, and nothing else.

A key of one kind opens no route of another kind (403 naming the kind). Keys are compared with
`hmac.compare_digest`, never stored or logged; two names may not share a key.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from lienthong.findings import AGENCIES as SOURCE_AGENCIES
from lienthong.settings import passed_env

log = logging.getLogger("lienthong.singlewindow")

KEYS_ENV = "LIENTHONG_SINGLEWINDOW_KEYS"
KEYS_CONN_ID = "lienthong_singlewindow"
MIN_API_KEY_CHARS = 16
PORTAL = "citizen_portal"

Kind = Literal["agency", "source", "portal"]
_KIND_TEXT = {"agency": "a consuming agency's", "source": "a registry agency's", "portal": "the citizen portal's"}


class ServiceError(Exception):
    """An answer other than 200: its status, the `detail` the caller sees and extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the name its key was given under, and what kind of caller that name is."""

    name: str
    kind: Kind


def kind_of(name: str, agencies: Any) -> Kind | None:
    """The kind of caller `name` is (module docstring), None if it names nobody."""
    if name in agencies:
        return "agency"
    if name in SOURCE_AGENCIES:
        return "source"
    if name == PORTAL:
        return "portal"
    return None


def load_api_keys(agencies: Any) -> dict[str, str]:
    """Name -> API key from LIENTHONG_SINGLEWINDOW_KEYS (else the connection's extra); errors never show a key.

    `agencies` is the consuming agencies by name (agencies.yaml); a name must be one of them, a registry agency
    or `citizen_portal`."""
    raw = passed_env(KEYS_ENV)
    if raw:
        try:
            keys = json.loads(raw)
        except ValueError:
            raise RuntimeError(f"{KEYS_ENV} is not valid JSON (expected {{\"<agency>\": \"<key>\"}})") from None
    else:
        try:
            from lienthong.connections import get_connection

            keys = get_connection(KEYS_CONN_ID).extra.get("keys")
        except Exception:
            keys = None
        if not keys:
            raise RuntimeError(f"no API keys: set {KEYS_ENV} to JSON {{\"<agency>\": \"<key>\"}} "
                               f"(or connection {KEYS_CONN_ID!r} with extra {{\"keys\": {{...}}}})")
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise RuntimeError(f"{KEYS_ENV}: expected a JSON object of agency name -> key (strings)")
    overlap = set(agencies) & ({PORTAL} | set(SOURCE_AGENCIES))
    if overlap:
        raise RuntimeError(f"agencies.yaml: agency name(s) {sorted(overlap)} are reserved for the registries and "
                           "the citizen portal")
    for name, key in keys.items():
        if kind_of(name, agencies) is None:
            raise RuntimeError(f"{KEYS_ENV}: unknown name {name!r} (agencies.yaml has {', '.join(agencies)}; the "
                               f"registries are {', '.join(SOURCE_AGENCIES)}; the portal is {PORTAL})")
        if len(key) < MIN_API_KEY_CHARS:
            raise RuntimeError(f"{KEYS_ENV}: the key of {name!r} is shorter than {MIN_API_KEY_CHARS} characters")
    if len(set(keys.values())) != len(keys):
        raise RuntimeError(f"{KEYS_ENV}: two names share one key")
    return keys


class KeyRing:
    """The keys, checked in constant time per key: `find` returns the principal a given key belongs to."""

    def __init__(self, keys: dict[str, str], agencies: Any):
        self._keys = [(Principal(name, kind_of(name, agencies) or "agency"), key.encode()) for name, key in keys.items()]

    def find(self, given: str | None) -> Principal | None:
        if not given:
            return None
        candidate = given.encode("utf-8", "replace")
        found = None
        for principal, key in self._keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(candidate, key):
                found = principal
        return found

    def names(self, kind: Kind) -> list[str]:
        return [p.name for p, _ in self._keys if p.kind == kind]


_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The caller's API key.")


async def authenticated(request: Request, given: Annotated[str | None, Security(_API_KEY)]) -> Principal:
    """The caller of this request, or 401 (recorded in `auth_failure`) / 429 while its client must wait.

    Uses the app's `state.service`: its `throttle`, `keys` (a KeyRing) and `record_auth_failure`."""
    # async: pure CPU work, so it runs on the event loop rather than costing a thread hop per request
    from lienthong.singlewindow.audit import AuthFailure

    service = request.app.state.service
    client = request.client.host if request.client else "unknown"
    wait = service.throttle.wait(client)
    if wait > 0:  # checked before the key: a waiting client learns nothing about any key
        log.info("client %s refused: too many wrong API keys, %.0f s to wait", client, math.ceil(wait))
        raise ServiceError(429, "too many wrong API keys from this client; try again later",
                           headers={"Retry-After": str(math.ceil(wait))})
    principal = service.keys.find(given)
    if principal is None:
        failures, backoff = service.throttle.failed(client)
        route = getattr(request.scope.get("route"), "path", "?")  # the template: the path itself holds an ID
        request_id = uuid.uuid4().hex
        log.warning("request %s: %s API key from %s on %s (%d in a row%s)", request_id,
                    "unknown" if given else "missing", client, route, failures,
                    f"; must wait {backoff:.0f} s" if backoff else "")
        await run_in_threadpool(service.record_auth_failure, AuthFailure(
            client, route, "unknown" if given else "missing", failures, backoff, request_id))
        raise ServiceError(401, "missing or unknown API key (header X-API-Key)", headers={"X-Request-ID": request_id})
    service.throttle.succeeded(client)
    return principal


Authenticated = Annotated[Principal, Depends(authenticated)]


def _only(kind: Kind, principal: Principal) -> Principal:
    if principal.kind != kind:
        raise ServiceError(403, f"this route takes {_KIND_TEXT[kind]} key; the key given is "
                                f"{_KIND_TEXT[principal.kind]} ({principal.name})")
    return principal


async def source_caller(principal: Authenticated) -> str:
    """The registry agency calling (one of `lienthong.findings.AGENCIES`), else 403."""
    return _only("source", principal).name


async def portal_caller(principal: Authenticated) -> str:
    """The citizen portal calling, else 403."""
    return _only("portal", principal).name


async def agency_caller(principal: Authenticated) -> str:
    """The consuming agency calling (its name in agencies.yaml), else 403."""
    return _only("agency", principal).name


SourceAgencyCaller = Annotated[str, Depends(source_caller)]
PortalCaller = Annotated[str, Depends(portal_caller)]
AgencyCaller = Annotated[str, Depends(agency_caller)]
