"""Airflow plugin: the auditors' view (lienthong.audit.webapp) in the API server, two entries in the UI's nav.

The API server mounts the app at `/lienthong-audit`; the nav entries open it inside the Airflow UI (an iframe at
`/plugin/audit-reports` and `/plugin/audit-findings`). The app builds itself on its first request, so loading
this plugin (which every Airflow component may do) imports nothing but Airflow's plugin base class. The app
checks Airflow's login and permissions itself: plugin apps are not protected by Airflow.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/lienthong-audit"


class LazyAuditApp:
    """An ASGI app that creates `lienthong.audit.webapp.create_app()` when the first request arrives."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the app has no start-up work
            return
        if self._app is None:
            from lienthong.audit.webapp import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class LienthongAuditPlugin(AirflowPlugin):
    name = "lienthong_audit"
    fastapi_apps = [{"app": LazyAuditApp(), "url_prefix": URL_PREFIX, "name": "Liên thông audit"}]
    # `href` is relative to the UI's base URL (no leading slash: works under a proxy path); with `url_route`
    # the UI shows it in an iframe at /plugin/<url_route>.
    external_views = [
        {"name": "Audit reports", "href": URL_PREFIX.lstrip("/") + "/", "destination": "nav",
         "url_route": "audit-reports", "category": "Audit"},
        {"name": "Findings", "href": URL_PREFIX.lstrip("/") + "/findings", "destination": "nav",
         "url_route": "audit-findings", "category": "Audit"},
    ]
