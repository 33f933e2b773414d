"""The lookup service's tunables, read from `lienthong.settings` (`LIENTHONG_SINGLEWINDOW_*`) and checked: pool
sizes, timeouts and the back-off after failed API keys. A value out of range stops the service at start with
the variable named."""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.settings import Settings, load_settings
from lienthong.singlewindow.pools import StartupError


@dataclass(frozen=True)
class ServiceConfig:
    """The `singlewindow_*` settings without their prefix (defaults live in Settings only)."""

    pool_size: int
    log_pool_size: int
    db_headroom: int
    read_timeout: float
    log_timeout: float
    auth_failures: int
    auth_window: float
    auth_backoff: float
    auth_backoff_max: float

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: int | float | None) -> ServiceConfig:
        s = settings or load_settings()
        values = {name: getattr(s, f"singlewindow_{name}") for name in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        for name, low in (("pool_size", 1), ("log_pool_size", 1), ("db_headroom", 0), ("auth_failures", 1)):
            if getattr(self, name) < low:
                raise StartupError(f"LIENTHONG_SINGLEWINDOW_{name.upper()} must be at least {low}")
        for name in ("read_timeout", "log_timeout", "auth_window", "auth_backoff", "auth_backoff_max"):
            if not getattr(self, name) > 0:
                raise StartupError(f"LIENTHONG_SINGLEWINDOW_{name.upper()} must be a positive number of seconds")
