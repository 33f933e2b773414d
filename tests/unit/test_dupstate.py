"""The dedupe state (`lienthong.reconcile.dupstate`) equals the whole computation (`dedupe.*_duplicates`: same
rows, same order) after every step of random change sequences on citizens, enterprises and land holders:
records joining and leaving clusters, survivors changing (an old CMND gained or lost, an update time, a code),
names refolded (accent and case variants of one name), records deleted or made ineligible (no birth date, a
holder flagged deleted), new records and copies of existing ones; with runs killed before or after the state's
commit (the next run's bases then hold the killed run's inputs too), staged versions of one table (found by
`_staged_version`) or of another (found by `_record_hash`), and compactions of the log. Also: the modes that
rebuild whole, and a run without bases writes no state."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong import zones
from lienthong.reconcile import dedupe, dupstate

# one name under several spellings that fold equal, and a few others
NAMES = ["Nguyễn Văn Hoà", "Nguyễn Văn Hòa", "NGUYỄN VĂN HOÀ", "Nguyen Van Hoa", "Trần Thị Bình", "Tran  Thi Binh",
         "Lê Văn Đức", "Le Van Duc", "Phạm Thủy", "Phạm Thuỷ", "   "]
DATES = [dt.date(1980, 1, 1), dt.date(1990, 6, 2), None]
COMMUNES = ["00004", "00008", None]
WHEN = [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)] + [None]

SCHEMAS = {
    "citizen": pa.schema([("citizen_id", pa.string()), ("legacy_id", pa.string()), ("full_name", pa.string()),
                          ("birth_date", pa.date32()), ("birth_date_precision", pa.string()), ("sex", pa.string()),
                          ("residence_commune_code_2025", pa.string()), ("household_id", pa.string()),
                          ("source_updated_at", pa.timestamp("us", tz="UTC"))]),
    "enterprise": pa.schema([("enterprise_code", pa.string()), ("name", pa.string()), ("founded_on", pa.date32()),
                             ("head_office_commune_code_2025", pa.string()),
                             ("source_updated_at", pa.timestamp("us", tz="UTC"))]),
    "land_holder": pa.schema([("province_code", pa.string()), ("holder_id", pa.int64()), ("holder_type", pa.string()),
                              ("name", pa.string()), ("document_number", pa.string()), ("address", pa.string()),
                              ("deleted", pa.bool_())]),
}
META = [("_merge_key", pa.string()), ("_record_hash", pa.string()), ("_staged_version", pa.int64())]
PRIMARY_KEY = {"citizen": ["citizen_id"], "enterprise": ["enterprise_code"], "land_holder": ["province_code", "holder_id"]}
WHOLE = {"citizen": dedupe.citizen_duplicates, "enterprise": dedupe.enterprise_duplicates,
         "land_holder": dedupe.holder_duplicates}


def _key(dataset: str, row: dict) -> str:
    return ":".join(str(row[k]) for k in PRIMARY_KEY[dataset])


class World:
    """Three staged-like tables, changed at random; each version written as staging writes it (a row keeps its
    `_staged_version` while its content stays, and takes the new version when it changes)."""

    def __init__(self, rng: random.Random, root: Path):
        self.rng, self.root = rng, root
        self.rows: dict[str, dict[str, dict]] = {d: {} for d in SCHEMAS}
        self.held: dict[Path, dict[str, tuple[str, int]]] = {}  # table -> key -> (hash, staged version)
        self.next_id = 100
        for _ in range(30):
            self.new("citizen")
            self.new("enterprise")
            self.new("land_holder")

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _random(self, dataset: str) -> dict:
        rng, i = self.rng, self._id()
        if dataset == "citizen":
            return {"citizen_id": f"{i:012d}", "legacy_id": rng.choice([None, None, f"{i:09d}"]),
                    "full_name": rng.choice(NAMES), "birth_date": rng.choice(DATES[:2] * 4 + [None]),
                    "birth_date_precision": rng.choice(["day", "day", "year", None]), "sex": rng.choice("MF"),
                    "residence_commune_code_2025": rng.choice(COMMUNES), "household_id": rng.choice([None, "", "H1"]),
                    "source_updated_at": rng.choice(WHEN)}
        if dataset == "enterprise":
            return {"enterprise_code": f"{i:010d}", "name": rng.choice(NAMES + [None]), "founded_on": rng.choice(DATES),
                    "head_office_commune_code_2025": rng.choice(COMMUNES + [""]), "source_updated_at": rng.choice(WHEN)}
        return {"province_code": rng.choice(["01", "31"]), "holder_id": i,
                "holder_type": rng.choice(["CA_NHAN", "CA_NHAN", "TO_CHUC"]), "name": rng.choice(NAMES + [None]),
                "document_number": rng.choice([None, None, "001", "addr:Thôn Đông"]),
                "address": rng.choice([None, "Thôn Đông", ""]), "deleted": rng.choice([False] * 6 + [True, None])}

    def new(self, dataset: str, like: dict | None = None) -> None:
        row = self._random(dataset)
        if like is not None:  # a second record of the same entity: everything but the key
            keys = PRIMARY_KEY[dataset]
            row = {**like, **{k: row[k] for k in keys}}
            if dataset == "land_holder":
                row["province_code"] = like["province_code"]
        self.rows[dataset][_key(dataset, row)] = row

    def change(self) -> str:
        rng = self.rng
        dataset = rng.choice(list(SCHEMAS))
        rows = self.rows[dataset]
        key = rng.choice(sorted(rows))
        row = rows[key]
        kind = rng.choice(["new", "copy", "copy", "delete", "name", "name", "group", "order", "order", "same"])
        if kind == "new":
            self.new(dataset)
        elif kind == "copy":  # joins the other record's cluster (or makes one)
            self.new(dataset, like=row)
        elif kind == "delete":
            del rows[key]
        elif kind == "name":  # a refold (a variant of the same name) or another name
            rows[key] = {**row, ("full_name" if dataset == "citizen" else "name"): rng.choice(NAMES)}
        elif kind == "group":  # leaves its group, joins another, or becomes ineligible
            fresh = self._random(dataset)
            column = rng.choice({"citizen": ["birth_date", "sex", "residence_commune_code_2025", "household_id",
                                             "birth_date_precision"],
                                 "enterprise": ["founded_on", "head_office_commune_code_2025"],
                                 "land_holder": ["document_number", "address", "holder_type", "deleted"]}[dataset])
            rows[key] = {**row, column: fresh[column]}
        elif kind == "order":  # the survivor may change
            order: str | None = {"citizen": rng.choice(["legacy_id", "source_updated_at"]),
                                 "enterprise": "source_updated_at", "land_holder": None}[dataset]
            if order is None:  # holders: the survivor is the smallest id; a copy with a smaller id takes over
                clone = {**row, "holder_id": rng.randint(1, 99)}
                rows[_key(dataset, clone)] = clone
            else:
                rows[key] = {**row, order: self._random(dataset)[order]}
        return f"{dataset}:{kind}"

    def write(self, dataset: str, table_dir: Path) -> str:
        """The current rows as the next version of the staged table at `table_dir`; returns its ref."""
        held = self.held.setdefault(table_dir, {})
        version = (zones.version(table_dir) or 0) + 1 if zones.is_table(table_dir) else 0
        out = []
        now: dict[str, tuple[str, int]] = {}
        for key, row in sorted(self.rows[dataset].items()):
            digest = hashlib.sha256(json.dumps(row, default=str, sort_keys=True).encode()).hexdigest()
            before = held.get(key)
            staged_version = before[1] if before is not None and before[0] == digest else version
            now[key] = (digest, staged_version)
            out.append({**row, "_merge_key": key, "_record_hash": digest, "_staged_version": staged_version})
        rows = pa.Table.from_pylist(out, schema=pa.schema([*SCHEMAS[dataset], *META]))
        commit = zones.create(table_dir, rows.take(pa.array(self.rng.sample(range(rows.num_rows), rows.num_rows))),
                              run_id="test")
        self.held[table_dir] = now
        return zones.ref(table_dir, commit.version if commit.version is not None else version)


def _whole(dataset: str, ref: str) -> pa.Table:
    """What the reconciliation's whole computation gives for a staged version (read as `_load_staged` reads it,
    holders alive only as `_integrate` passes them)."""
    table = zones.read_table(ref).select(SCHEMAS[dataset].names)
    if dataset == "land_holder":
        table = table.filter(pc.invert(pc.fill_null(table["deleted"], False)))
    table = table.sort_by([(k, "ascending") for k in PRIMARY_KEY[dataset]])
    return WHOLE[dataset](table)


def _run(world: World, integrated: Path, refs: dict[str, str], bases: dict[str, list[str]] | None) -> dict:
    whole = {d: (lambda d=d: _whole(d, refs[d])) for d in SCHEMAS}
    out, metrics = dupstate.duplicates(refs, bases, integrated, whole=whole)
    for dataset in SCHEMAS:
        expected = _whole(dataset, refs[dataset])
        assert out[dataset].equals(expected), (dataset, metrics[dataset], out[dataset].to_pylist()[:20],
                                               expected.to_pylist()[:20])
    return metrics


@pytest.mark.parametrize("seed", range(6))
def test_state_equals_whole_after_every_step(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dupstate, "COMPACT_FRACTION", 0.4)
    rng = random.Random(seed)
    world = World(rng, tmp_path)
    integrated = tmp_path / "integrated"
    tables = {d: [tmp_path / "staged" / d, tmp_path / "staged2" / d] for d in SCHEMAS}
    refs = {d: world.write(d, tables[d][0]) for d in SCHEMAS}
    _run(world, integrated, refs, {d: [] for d in SCHEMAS})  # no state yet: full
    last, unfinished = dict(refs), []  # type: tuple[dict[str, str], list[dict[str, str]]]
    modes: dict[str, int] = {}
    for _step in range(25):
        for _ in range(rng.choice([1, 2, 4, 8])):
            world.change()
        # mostly the next version of the same table; sometimes another table (a restored or moved zone)
        refs = {d: world.write(d, tables[d][0] if rng.random() < 0.85 else tables[d][1]) for d in SCHEMAS}
        bases = {d: [last[d], *[u[d] for u in unfinished]] for d in SCHEMAS}
        fate = rng.choice(["ok", "ok", "ok", "killed_before", "killed_after"])
        if fate == "killed_before":  # its inputs were recorded, nothing was written
            unfinished.append(refs)
            continue
        metrics = _run(world, integrated, refs, bases)
        for m in metrics.values():
            key = m["mode"] + (":compacted" if m.get("counts", {}).get("compacted") else "") + (
                ":" + m["counts"]["found_by"] if "found_by" in m.get("counts", {}) else "")
            modes[key] = modes.get(key, 0) + 1
        if fate == "killed_after":  # wrote its state, never recorded success
            unfinished.append(refs)
        else:
            last, unfinished = dict(refs), []
    assert any(k.startswith("change") for k in modes), modes


def test_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    world = World(rng, tmp_path)
    integrated = tmp_path / "integrated"
    table = {d: tmp_path / "staged" / d for d in SCHEMAS}
    first = {d: world.write(d, table[d]) for d in SCHEMAS}
    # without bases: the whole computation, and no state written
    metrics = _run(world, integrated, first, None)
    assert {m["mode"] for m in metrics.values()} == {"whole"}
    assert not any(zones.is_table(dupstate.table_path(integrated, d)) for d in SCHEMAS)
    assert _run(world, integrated, first, {d: [] for d in SCHEMAS})["citizen"]["mode"] == "full"
    for _ in range(5):
        world.change()
    second = {d: world.write(d, table[d]) for d in SCHEMAS}
    assert _run(world, integrated, second, {d: [first[d]] for d in SCHEMAS})["citizen"]["mode"] == "change"
    # the state names `second`: bases without it rebuild whole
    third = {d: world.write(d, table[d]) for d in SCHEMAS}
    metrics = _run(world, integrated, third, {d: [first[d]] for d in SCHEMAS})
    assert metrics["citizen"]["mode"] == "full" and "not one of the run's bases" in metrics["citizen"]["reason"]
    # the rules changed: whole
    monkeypatch.setattr(dupstate, "RULES_VERSION", "test-bumped")
    fourth = {d: world.write(d, table[d]) for d in SCHEMAS}
    metrics = _run(world, integrated, fourth, {d: [third[d]] for d in SCHEMAS})
    assert metrics["enterprise"]["mode"] == "full" and "rules" in metrics["enterprise"]["reason"]
    # the version the state reflects is gone (vacuumed): whole
    fifth = {d: world.write(d, table[d]) for d in SCHEMAS}
    monkeypatch.setattr(dupstate.zones, "readable", lambda reference: False)
    metrics = _run(world, integrated, fifth, {d: [fourth[d]] for d in SCHEMAS})
    assert metrics["land_holder"]["mode"] == "full" and "gone" in metrics["land_holder"]["reason"]
