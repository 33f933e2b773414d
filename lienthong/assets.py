"""The Airflow Assets the pipelines produce and consume (names and URIs in one place).

Imported by DAG files at parse time, so it imports nothing but `airflow.sdk.Asset` and the dataset graph
(lienthong.datasets, plain constants).
"""

from __future__ import annotations

from airflow.sdk import Asset

from lienthong.datasets import INTEGRATED as INTEGRATED_DATASETS
from lienthong.datasets import PUBLISHED as PUBLISHED_DATASETS
from lienthong.datasets import STAGED as STAGED_DATASETS

__all__ = ["INTEGRATED_DATASETS", "PUBLISHED_DATASETS", "STAGED_DATASETS"]

RAW_POPULATION_CITIZENS = Asset(name="raw_population_citizens", uri="lienthong://raw/population_registry/citizens")
RAW_BUSINESS_ENTERPRISES = Asset(name="raw_business_enterprises", uri="lienthong://raw/business_registry/enterprises")
RAW_LAND = Asset(name="raw_land", uri="lienthong://raw/land_registry")


def staged(dataset: str) -> Asset:
    """The Asset of a validated staged dataset (publication schedules on these)."""
    return Asset(name=f"staged_{dataset}", uri=f"lienthong://staged/{dataset}")


STAGED_CITIZEN = staged("citizen")


def integrated(dataset: str) -> Asset:
    """The Asset of an integrated (reconciled) dataset: golden records and cross-agency links."""
    return Asset(name=f"integrated_{dataset}", uri=f"lienthong://integrated/{dataset}")


def published(dataset: str) -> Asset:
    """The Asset of a published dataset (agencies' DAGs can schedule on it)."""
    return Asset(name=f"published_{dataset}", uri=f"lienthong://published/{dataset}")


PUBLISHED_CITIZEN_PROFILE = published("citizen_profile")

# Emitted by the publish DAG's last task once every dataset's publication has been tried (published,
# unchanged or refused by its gate): the audit report runs on it, so a failed gate is reported too.
PUBLICATION_ROUND = Asset(name="publication_round", uri="lienthong://published/_round")
AUDIT_REPORT = Asset(name="audit_report", uri="lienthong://reports/audit")
