"""Land registry connector (agency-systems.md §3): one PostgreSQL database per province, three tables read
from one read-only snapshot, incrementally by (cap_nhat_luc, id), tombstones carried to raw."""

from connectors.land.extract import SOURCE, TABLES, Keyset, LandRegistryExtractor

__all__ = ["SOURCE", "TABLES", "Keyset", "LandRegistryExtractor"]
