"""The platform's own Great Expectations (GX Core 1.x) expectations: the checks no built-in one expresses.

`ExpectPersonalIdToMatchBirth` checks a personal ID (CCCD) against the record's birth year and sex: digit 4
encodes century and sex, digits 5-6 the birth year (Circular 59/2021/TT-BCA; the rule itself lives in
`lienthong.ids`). It is a multicolumn map expectation over (personal ID, birth date, sex), so GX counts,
samples and indexes its failing rows like any built-in map expectation, and `mostly` carries the contract's
tolerance. Rows it cannot check (an ID not of the 12-digit shape, no birth date) count as passing: the ID's
shape is a separate rule, and a missing birth date is the birth-date null rule's business.

Defining the classes registers them with GX (its metaclasses record every Expectation and MetricProvider
subclass), so importing this module is what makes the expectation available to suites and Data Docs.
Importing GX costs seconds: import this module inside tasks, never at DAG parse time.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from great_expectations.compatibility import pydantic
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import MulticolumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import MulticolumnMapMetricProvider
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (
    multicolumn_condition_partial,
)
from great_expectations.render import RenderedStringTemplateContent
from great_expectations.render.components import LegacyRendererType
from great_expectations.render.renderer.renderer import renderer
from great_expectations.render.util import num_to_str

from lienthong.ids import personal_id_matches_birth_series

PERSONAL_ID_METRIC = "lienthong.personal_id_matches_birth"
# The citizen contract's column names, in the order the expectation reads them: ID, birth date, sex.
PERSONAL_ID_COLUMNS = ("citizen_id", "birth_date", "sex")


class PersonalIdMatchesBirth(MulticolumnMapMetricProvider):
    """Row condition: True where the ID agrees with birth year and sex, or where it cannot be checked."""

    condition_metric_name = PERSONAL_ID_METRIC
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser", "ignore_row_if")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **kwargs: Any) -> pd.Series:
        ids, births, sexes = (column_list[c] for c in column_list.columns[:3])
        # A missing sex is "unknown" (both sex digits allowed); as pandas NA it would make the vectorised
        # check raise ("boolean value of NA is ambiguous"), so it is passed as an empty string.
        verdict = personal_id_matches_birth_series(ids, births, sexes.astype("string").fillna(""))
        # None = not checkable: not a failure of this rule (see the module docstring).
        return verdict.map(lambda v: v is not False).astype(bool)


class ExpectPersonalIdToMatchBirth(MulticolumnMapExpectation):
    """Expect each personal ID's century/sex digit and year digits to agree with the row's birth date and sex.

    `column_list` is (personal ID, birth date, sex), in that order. Rows whose ID is not 12 digits or whose
    birth date is missing pass (they are not checkable); an unknown or other sex allows both sex digits.
    """

    map_metric: ClassVar[str] = PERSONAL_ID_METRIC
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    args_keys: ClassVar[tuple[str, ...]] = ("column_list",)
    # ignore_row_if keeps GX's default, all_values_are_missing: a row with a missing sex is still checkable.

    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "experimental",
        "tags": ["lienthong", "personal id", "multi-column expectation"],
        "contributors": ["lienthong"],
    }

    @pydantic.validator("column_list")
    def _three_columns(cls, v: list[str]) -> list[str]:
        if len(v) != len(PERSONAL_ID_COLUMNS):
            raise ValueError("column_list must be (personal ID, birth date, sex)")
        return v

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration: Any = None, result: Any = None, runtime_configuration: dict | None = None, **kwargs: Any
    ) -> list[RenderedStringTemplateContent]:
        kw = dict(configuration.kwargs if configuration else {})
        cols = list(kw.get("column_list") or PERSONAL_ID_COLUMNS)
        params: dict[str, Any] = {"id": cols[0], "birth": cols[1], "sex": cols[2]}
        template = "$id digits 4-6 must encode the century, sex and year of $birth and $sex (Circular 59/2021)"
        if kw.get("mostly") is not None and kw["mostly"] < 1:
            params["mostly_pct"] = num_to_str(kw["mostly"] * 100, no_scientific=True)
            template += ", at least $mostly_pct % of the time"
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": template + ".",
                    "params": params,
                    "styling": (runtime_configuration or {}).get("styling"),
                },
            )
        ]
