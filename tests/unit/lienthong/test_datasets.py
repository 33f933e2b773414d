"""The dataset graph in lienthong.datasets says exactly what the contracts say (zone, derivedFrom), and what the
publish gate and the Assets derive from it."""

from __future__ import annotations

from lienthong import assets, datasets
from lienthong.contracts import load_contracts

CONTRACTS = load_contracts()


def test_each_zone_lists_exactly_the_contracts_of_that_zone():
    for zone, names in (("staged", datasets.STAGED), ("integrated", datasets.INTEGRATED),
                        ("published", datasets.PUBLISHED)):
        declared = {n for n, c in CONTRACTS.items() if c.custom.get("zone") == zone}
        assert set(names) == declared, zone
        assert len(names) == len(set(names))
        assert all(datasets.zone_of(n) == zone for n in names)


def test_derived_from_is_the_contracts_derived_from():
    declared = {n: tuple(c.custom["derivedFrom"]) for n, c in CONTRACTS.items() if "derivedFrom" in c.custom}
    assert datasets.DERIVED_FROM == declared
    known = set(datasets.STAGED) | set(datasets.INTEGRATED) | set(datasets.STORES)
    assert all(set(parents) <= known for parents in declared.values())


def test_the_publish_gate_waits_on_every_staged_ancestor():
    assert datasets.staged_inputs("parcel_register") == ("citizen", "enterprise", "legal_representative",
                                                         "land_holder", "parcel", "certificate")
    assert datasets.staged_inputs("person_master") == ("citizen", "legal_representative", "land_holder")
    assert datasets.staged_inputs("quality_summary") == ()
    assert [d for d in datasets.PUBLISHED if datasets.from_integrated(d)] == ["citizen_profile", "enterprise_profile",
                                                                           "parcel_register"]


def test_the_assets_follow_the_graph():
    assert assets.STAGED_DATASETS == datasets.STAGED
    assert assets.INTEGRATED_DATASETS == datasets.INTEGRATED
    assert assets.PUBLISHED_DATASETS == datasets.PUBLISHED


def test_the_ingest_schedule_is_parsed_in_one_place(monkeypatch):
    from lienthong import dagconfig, settings

    for raw, expected in ((None, "@daily"), ("", None), ("manual", None), ("none", None), ("0 2 * * *", "0 2 * * *")):
        if raw is None:
            monkeypatch.delenv("LIENTHONG_INGEST_SCHEDULE", raising=False)
        else:
            monkeypatch.setenv("LIENTHONG_INGEST_SCHEDULE", raw)
        assert dagconfig.ingest_schedule() == settings.load_settings().ingest_schedule == expected, raw
    assert dagconfig.ingest_schedule is settings.ingest_schedule



def test_no_module_reads_the_environment_outside_settings():
    """Settings are read in one place: elsewhere `os.environ` may only be written (for a child process)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    offenders = []
    for folder in ("lienthong", "connectors", "dags", "plugins"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "lienthong" / "settings.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            written = {id(t.value) for node in ast.walk(tree) if isinstance(node, ast.Assign | ast.AugAssign)
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                       if isinstance(t, ast.Subscript)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                        and isinstance(node.value, ast.Name) and node.value.id == "os" and id(node) not in written):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, offenders
