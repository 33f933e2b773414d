"""The single-window lookup service: agencies look up a citizen, an enterprise or a parcel over HTTP and get
the columns their purpose is granted (schemas/agencies.yaml), read through their own database role.

`create_app` builds the FastAPI app (`app`); `python -m lienthong.singlewindow` serves it with uvicorn.
Modules: `validation` (path parameters), `readers` (per-agency connections), `audit` (the access log and refused
keys), `pools` (connection pools and the start-up checks against the server), `throttle` (back-off after wrong
API keys), `config` (the tunables from `lienthong.settings`).
"""

from __future__ import annotations

from lienthong.singlewindow.app import create_app

__all__ = ["create_app"]
