"""Standardization library: vectorised cleaning of Arrow columns, one module per concern.

Every function takes Arrow arrays (or chunked arrays, or plain lists), does its Python work once per
DISTINCT value (dictionary encoding + `take`, never a loop over rows) and returns the cleaned values with
what it did: a `common.Standardized` (values, repaired, issue) or a subclass with extra columns, so staging
can count repairs and quarantine with machine-readable reasons.

Modules:
  common       the result type `Standardized`, the distinct-value helpers, issue-string conventions
  text         `nfc`, `repair_mojibake` (TCVN3 / VNI), `clean_case_and_space`, `fold_key`, `standardize_name`
  identifiers  `personal_id` (CCCD / CMND vs birth date and sex), `enterprise_code` (python-stdnum `vn.mst`)
  dates        `parse_dates` (several forms, partial '00' dates, precision), `local_to_utc`
  units        `commune_to_2025` (old three-level / new two-level commune codes -> 2025 codes)
  land_use     `land_use` ('+'-joined purpose codes vs schemas/reference/land_use_codes.yaml, with version)

Submodules are imported explicitly (`from lienthong.standardize.text import standardize_name`), so
importing one does not load the others' reference data.
"""
