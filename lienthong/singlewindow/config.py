"""The lookup service's tunables, read from `lienthong.settings` (`LIENTHONG_SINGLEWINDOW_*`) and checked: pool
sizes, timeouts and the back-off after failed API keys. A value out of range stops the service at start with
the variable named."""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.settings import Settings, load_settings
from lienthong.singlewindow.pools import StartupError


@dataclass(frozen=True)
class ServiceConfig:
    pool_size: int = 4
    log_pool_size: int = 4
    db_headroom: int = 5
    read_timeout: float = 5.0
    log_timeout: float = 2.0
    auth_failures: int = 10
    auth_window: float = 600.0
    auth_backoff: float = 1.0
    auth_backoff_max: float = 900.0

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
