"""Population registry connector: REST + JSON, OAuth2 client credentials, cursor paging."""

from connectors.population.client import PopulationRegistryClient

__all__ = ["PopulationRegistryClient"]
