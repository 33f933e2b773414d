"""Shared connector base: HTTP with retry and auth, paging, raw landing, watermark state."""

from connectors.base.errors import SchemaDriftError, SourceError, TransientSourceError

__all__ = ["SourceError", "TransientSourceError", "SchemaDriftError"]
