"""Contracts: every shipped contract loads; a bad one is refused with file, path and problem; Arrow schema and
DDL are derived from the fields."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from lienthong.contracts import ContractError, contract, load_contract_file, load_contracts

REPO = Path(__file__).resolve().parents[3]
STAGED = {"citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate"}


def test_every_shipped_contract_loads_and_covers_the_staged_and_published_datasets():
    contracts = load_contracts(REPO / "schemas")
    assert STAGED | {"citizen_profile"} <= set(contracts)
    for c in contracts.values():
        assert c.primary_key, c.name
        assert c.owner_agency
        assert all(f.classification in ("public", "internal", "personal", "sensitive") for f in c.fields)


def test_sensitive_fields_are_classified_sensitive():
    citizen = load_contracts(REPO / "schemas")["citizen"]
    assert citizen.field("ethnicity").classification == "sensitive"
    assert citizen.field("religion").classification == "sensitive"


def test_arrow_schema_follows_the_contract_fields_and_types():
    c = load_contracts(REPO / "schemas")["citizen"]
    schema = c.arrow_schema()
    assert schema.names == c.field_names
    assert schema.field("birth_date").type == pa.date32()
    assert schema.field("source_updated_at").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("citizen_id").nullable
    assert schema.metadata[b"contract_version"] == c.version.encode()
    ent = load_contracts(REPO / "schemas")["enterprise"].arrow_schema()
    assert ent.field("industries").type == pa.list_(pa.struct([("code", pa.string()), ("is_main", pa.bool_())]))


def test_postgres_ddl_has_every_field_the_key_and_classification_comments():
    c = load_contracts(REPO / "schemas")["parcel"]
    ddl = c.postgres_ddl("parcel_v1", "staged")
    for f in c.fields:
        assert f'"{f.name}"' in ddl
    assert 'PRIMARY KEY ("province_code", "parcel_id")' in ddl
    assert '"map_sheet" bigint NOT NULL' in ddl
    assert "[public]" in ddl
    assert "PRIMARY KEY" not in c.postgres_ddl("p", primary_key=False)


def _write(tmp_path: Path, name: str, mutate) -> Path:
    doc = yaml.safe_load((REPO / "schemas" / "citizen.yaml").read_text())
    mutate(doc)
    doc["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def test_unknown_logical_type_is_refused_with_file_and_path(tmp_path):
    def bad(doc):
        doc["schema"][0]["properties"][3]["logicalType"] = "datetime"

    path = _write(tmp_path, "bad_type", bad)
    with pytest.raises(ContractError, match=r"bad_type\.yaml: at \$\.schema\[0\]\.properties\[3\]\.logicalType: 'datetime' is not one of"):
        load_contract_file(path)


def test_bad_classification_is_refused(tmp_path):
    path = _write(tmp_path, "bad_class", lambda d: d["schema"][0]["properties"][0].update(classification="secret"))
    with pytest.raises(ContractError, match=r"properties\[0\]\.classification"):
        load_contract_file(path)


def test_invalid_regex_in_a_rule_is_refused(tmp_path):
    def bad(doc):
        doc["schema"][0]["properties"][0]["quality"][1]["arguments"]["pattern"] = "^[0-9{12}$"

    path = _write(tmp_path, "bad_regex", bad)
    with pytest.raises(ContractError, match=r"properties\[0\]\.quality\[1\]\.arguments\.pattern: not a valid regular expression"):
        load_contract_file(path)


def test_contract_without_primary_key_is_refused(tmp_path):
    def bad(doc):
        for p in doc["schema"][0]["properties"]:
            p.pop("primaryKey", None)

    with pytest.raises(ContractError, match="no property has primaryKey"):
        load_contract_file(_write(tmp_path, "no_pk", bad))


def test_name_must_match_file_name(tmp_path):
    path = _write(tmp_path, "citizen_x", lambda d: None)
    path2 = path.rename(tmp_path / "other.yaml")
    with pytest.raises(ContractError, match=r"other\.yaml: at \$\.name"):
        load_contract_file(path2)


def test_broken_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nschema: [\n  - a: b\n")
    with pytest.raises(ContractError, match=r"broken\.yaml: at line \d+, column \d+: not valid YAML"):
        load_contract_file(path)


def test_one_contract_is_read_from_its_own_file_only(tmp_path):
    _write(tmp_path, "citizen_copy", lambda d: None)
    (tmp_path / "broken.yaml").write_text("id: x\nschema: [\n")
    got = contract("citizen_copy", tmp_path)
    assert got.name == "citizen_copy" and got is contract("citizen_copy", tmp_path), "read once, then cached"
    with pytest.raises(ContractError, match=r"broken\.yaml"):
        load_contracts(tmp_path)  # the whole folder still has to be valid for the listing
    for name in ("absent", "../citizen_copy", "agencies", "Citizen_copy"):
        with pytest.raises(KeyError, match=f"no contract named {name!r} in {tmp_path}"):
            contract(name, tmp_path)


def test_a_shipped_contract_read_alone_is_the_one_in_the_listing():
    assert contract("enterprise") is load_contracts()["enterprise"]


def test_yaml_errors_from_the_c_loader_still_name_line_and_column():
    from lienthong import yamltext

    assert yamltext._LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError) as err:
        yamltext.safe_load("a: [1,\n  b: {\n")
    assert err.value.problem_mark is not None
    with pytest.raises(yaml.constructor.ConstructorError):  # still a safe loader: no Python objects
        yamltext.safe_load("!!python/object/apply:os.system ['true']")


def test_tolerances_are_read_from_the_rules():
    c = load_contracts(REPO / "schemas")["citizen"]
    rule = next(r for r in c.rules if r.name == "citizen_id:invalidValues:pattern")
    assert rule.severity == "critical" and rule.max_fraction == pytest.approx(0.01)
    assert rule.allows(1, 100) and not rule.allows(2, 100)


def _strip_rules(doc):
    doc["schema"][0].pop("quality", None)
    for p in doc["schema"][0]["properties"]:
        p.pop("quality", None)


def test_a_staged_contract_without_any_quality_rule_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path, "no_rules", _strip_rules)
    with pytest.raises(ContractError, match=r"no_rules\.yaml: at \$\.schema\[0\]: a staged contract needs at least one quality rule"):
        load_contract_file(path)


def test_a_contract_outside_the_staged_zone_may_have_no_rule(tmp_path):
    def published(doc):
        _strip_rules(doc)
        for p in doc["customProperties"]:
            if p["property"] == "zone":
                p["value"] = "published"

    assert load_contract_file(_write(tmp_path, "no_rules_published", published)).rules == []


def test_every_shipped_staged_contract_has_a_critical_rule_and_a_key_uniqueness_rule():
    for name in STAGED:
        c = contract(name)
        assert any(r.severity == "critical" for r in c.rules), name
        assert any(r.metric == "duplicateValues" for r in c.rules), name


def _add_rule(index: int, rule: dict, dataset: bool = False):
    def mutate(doc):
        target = doc["schema"][0] if dataset else doc["schema"][0]["properties"][index]
        target.setdefault("quality", []).append(rule)
    return mutate


@pytest.mark.parametrize(
    ("name", "mutate", "error"),
    [
        # full_name (index 2) is a string: no "future" for it
        ("future_on_text", _add_rule(2, {"metric": "futureValues", "mustBe": 0, "severity": "warning"}),
         r"properties\[2\]\.quality\[1\]: futureValues needs a date"),
        ("key_on_column", _add_rule(0, {"metric": "duplicateValues", "arguments": {"properties": ["citizen_id", "sex"]},
                                        "mustBe": 0, "severity": "critical"}),
         r"properties\[0\]\.quality\[3\]\.arguments\.properties: properties .* schema-level duplicateValues"),
        ("key_unknown_column", _add_rule(0, {"name": "k", "metric": "duplicateValues", "arguments": {"properties": ["citizen_id", "nope"]},
                                             "mustBe": 0, "severity": "critical"}, dataset=True),
         r"quality\[1\]\.arguments: rule k reads unknown columns \['nope'\]"),
        ("key_without_columns", _add_rule(0, {"metric": "duplicateValues", "mustBe": 0, "severity": "critical"}, dataset=True),
         r"quality\[1\]\.arguments: a schema-level duplicateValues rule needs properties"),
        ("critical_only_where", _add_rule(2, {"metric": "invalidValues", "arguments": {"pattern": "^A", "onlyWhere": "sex=NAM"},
                                              "mustBe": 0, "severity": "critical"}),
         r"quality\[1\]\.arguments\.onlyWhere: onlyWhere is for warning rules only"),
        ("same_rule_twice", _add_rule(0, {"metric": "nullValues", "mustBe": 0, "severity": "warning"}),
         r"properties\[0\]\.quality\[3\]: duplicate quality rule name 'citizen_id:nullValues'"),
    ],
)
def test_new_rule_vocabulary_is_checked_with_file_and_path(tmp_path, name, mutate, error):
    with pytest.raises(ContractError, match=rf"{name}\.yaml: at .*{error}"):
        load_contract_file(_write(tmp_path, name, mutate))


def test_the_new_rule_vocabulary_is_read_into_the_rules():
    parcel = contract("parcel")
    key = next(r for r in parcel.rules if r.name == "parcel_natural_key_unique")
    assert key.column is None and key.severity == "critical" and key.max_rows == 0
    assert key.columns == ["province_code", "commune_code_original", "map_sheet", "parcel_number"]
    holder = contract("land_holder")
    cccd = next(r for r in holder.rules if r.name == "document_number:invalidValues:pattern[document_type=CCCD]")
    assert cccd.only_where == ("document_type", "CCCD") and cccd.columns == ["document_number", "document_type"]
    issued = next(r for r in contract("certificate").rules if r.name == "issued_on:futureValues")
    assert issued.severity == "warning" and issued.max_fraction == pytest.approx(0.001)
