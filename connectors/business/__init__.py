"""Business registry connector: REST + XML, API key, an offset walk over changing data that cannot skip."""

from connectors.business.client import BusinessRegistryClient

__all__ = ["BusinessRegistryClient"]
