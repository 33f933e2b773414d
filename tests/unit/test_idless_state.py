"""The ID-less holder state (`lienthong.reconcile.idlessstate`) equals the whole pass after every step of random
change sequences: new ID-less holders, citizens renamed or given another birth year (a name becoming unique or
ambiguous), holders moving parcel or commune, parcels moving commune, deaths, duplicate citizens appearing,
holders losing or gaining a document number, model links moving; with runs killed before or after the state's
commit (the next run's bases then hold the killed run's citizen version too)."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lienthong import adminunits, zones
from lienthong.reconcile import dedupe, idless, idlessstate
from lienthong.reconcile.people import LinkBands
from lienthong.settings import load_settings

# Hà Nội: 00004 Ba Đình, 00008 Ngọc Hà, 00025 Giảng Võ (2025); 00007 Cống Vị (old, split between 00008 and
# 00025). 10507: a ward of Hải Phòng (31).
RESIDENCES = [("00004", "00004"), ("00008", "00008"), ("00025", "00025"), ("00007", "00008"), ("10507", "10507")]
PARCEL_CODES = [("00004", "00004"), ("00007", "00008"), ("00008", "00008"), ("00025", "00025"), ("99999", None)]
NAMES = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Cường", "Phạm Thị Dung", "Hoàng Văn Em", "Vũ Thị Giang"]
YEARS = [1970, 1980]
STREETS = ["Thôn Đông", "Thôn Tây", "Số 1 Kim Mã"]
BANDS = LinkBands()


def _commune_name(code: str) -> str:
    new = adminunits.new_communes()
    return new[code].name if code in new else adminunits.old_communes()[code].name


class World:
    """Staged-like tables of one small province, changed at random."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.citizens: dict[str, dict] = {}
        self.holders: dict[int, dict] = {}
        self.parcels: dict[int, dict] = {}
        self.certificates: dict[int, dict] = {}
        self.model: dict[str, tuple[str, float]] = {}
        self.unclustered: set[str] = set()  # names whose clusters the dedupe rules leave out (a rule change)
        self.next_id = 1
        for _ in range(40):
            self.new_citizen()
        for pid in range(1, 13):
            original, code = rng.choice(PARCEL_CODES)
            self.parcels[pid] = {"province_code": "01", "parcel_id": pid, "commune_code_original": original,
                                 "commune_code_2025": code, "deleted": False}
        for _ in range(25):
            self.new_holder()
        for _ in range(20):
            self.move_model_link()

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def new_citizen(self, like: dict | None = None) -> None:
        rng = self.rng
        cid = f"{self._id():012d}"
        if like is not None:  # a duplicate record of the same person
            row = {**like, "citizen_id": cid, "source_updated_at": like["source_updated_at"] + 1}
        else:
            original, code = rng.choice(RESIDENCES)
            row = {"citizen_id": cid, "legacy_id": None, "full_name": rng.choice(NAMES),
                   "birth_date": dt.date(rng.choice(YEARS), 5, 1), "birth_date_precision": "day",
                   "sex": rng.choice("MF"), "residence_address": rng.choice(STREETS),
                   "residence_commune_code": original, "residence_commune_code_2025": code,
                   "household_id": None, "source_updated_at": 1, "status": "alive"}
        self.citizens[cid] = row

    def new_holder(self) -> None:
        rng = self.rng
        hid = self._id()
        street, commune = rng.choice(STREETS), rng.choice(["00004", "00008", "00025", "00007"])
        self.holders[hid] = {
            "province_code": "01", "holder_id": hid, "holder_type": "CA_NHAN" if rng.random() < 0.95 else "TO_CHUC",
            "name": rng.choice(NAMES), "document_type": None,
            "document_number": None if rng.random() < 0.85 else rng.choice(["  ", "001080000001"]),
            "birth_year": rng.choice([*YEARS, None, None]),
            "address": rng.choice([None, f"{street}, {_commune_name(commune)}"]), "deleted": False}
        for _ in range(rng.choice([0, 1, 1, 2])):
            cid = self._id()
            self.certificates[cid] = {"province_code": "01", "holder_id": hid,
                                      "parcel_id": rng.choice(list(self.parcels)), "deleted": False}

    def move_model_link(self) -> None:
        rng = self.rng
        hid = rng.choice(list(self.holders))
        key = f"01:{hid}"
        if key in self.model and rng.random() < 0.3:
            del self.model[key]
            return
        self.model[key] = (rng.choice(list(self.citizens)), rng.choice([0.5, 0.85, 0.99]))

    def change(self) -> str:
        rng = self.rng
        kind = rng.choice(["new_holder", "rename", "birth_year", "move_holder", "move_parcel", "death", "duplicate",
                           "document", "model", "move_citizen", "delete_holder", "new_citizen", "dedupe_rules"])
        cid = rng.choice(list(self.citizens))
        hid = rng.choice(list(self.holders))
        if kind == "new_holder":
            self.new_holder()
        elif kind == "rename":
            self.citizens[cid] = {**self.citizens[cid], "full_name": rng.choice(NAMES)}
        elif kind == "birth_year":
            self.citizens[cid] = {**self.citizens[cid], "birth_date": dt.date(rng.choice(YEARS), 5, 1)}
        elif kind == "move_citizen":
            original, code = rng.choice(RESIDENCES)
            self.citizens[cid] = {**self.citizens[cid], "residence_commune_code": original,
                                  "residence_commune_code_2025": code, "residence_address": rng.choice(STREETS)}
        elif kind == "move_holder":
            certs = [k for k, c in self.certificates.items() if c["holder_id"] == hid]
            if certs:
                k = rng.choice(certs)
                self.certificates[k] = {**self.certificates[k], "parcel_id": rng.choice(list(self.parcels))}
            else:
                street, commune = rng.choice(STREETS), rng.choice(["00004", "00008", "00025"])
                self.holders[hid] = {**self.holders[hid], "address": f"{street}, {_commune_name(commune)}"}
        elif kind == "move_parcel":
            pid = rng.choice(list(self.parcels))
            original, code = rng.choice(PARCEL_CODES)
            self.parcels[pid] = {**self.parcels[pid], "commune_code_original": original, "commune_code_2025": code}
        elif kind == "death":
            if rng.random() < 0.5:
                del self.citizens[cid]  # gone from the registry
            else:
                self.citizens[cid] = {**self.citizens[cid], "status": "dead"}  # a column the pass does not read
        elif kind == "duplicate":
            self.new_citizen(like=self.citizens[cid])
        elif kind == "document":
            doc = self.holders[hid]["document_number"]
            self.holders[hid] = {**self.holders[hid], "document_number": None if doc else "001080000001"}
        elif kind == "delete_holder":
            self.holders[hid] = {**self.holders[hid], "deleted": not self.holders[hid]["deleted"]}
        elif kind == "new_citizen":
            self.new_citizen()
        elif kind == "dedupe_rules":  # the clusters change with no citizen changing
            self.unclustered ^= {rng.choice(NAMES)}
        else:
            self.move_model_link()
        return kind

    # --- the tables ---

    def citizen_table(self) -> pa.Table:
        rows = sorted(self.citizens.values(), key=lambda r: r["citizen_id"])
        t = pa.Table.from_pylist(rows, schema=pa.schema([
            ("citizen_id", pa.string()), ("legacy_id", pa.string()), ("full_name", pa.string()),
            ("birth_date", pa.date32()), ("birth_date_precision", pa.string()), ("sex", pa.string()),
            ("residence_address", pa.string()), ("residence_commune_code", pa.string()),
            ("residence_commune_code_2025", pa.string()), ("household_id", pa.string()),
            ("source_updated_at", pa.int64()), ("status", pa.string())]))
        hashes = [hashlib.sha256(repr(sorted(r.items())).encode()).hexdigest() for r in rows]
        return t.append_column("_merge_key", t["citizen_id"]).append_column("_record_hash", pa.array(hashes))

    def holder_table(self) -> pa.Table:
        return pa.Table.from_pylist(sorted(self.holders.values(), key=lambda r: r["holder_id"]), schema=pa.schema([
            ("province_code", pa.string()), ("holder_id", pa.int64()), ("holder_type", pa.string()),
            ("name", pa.string()), ("document_type", pa.string()), ("document_number", pa.string()),
            ("birth_year", pa.int64()), ("address", pa.string()), ("deleted", pa.bool_())]))

    def certificate_table(self) -> pa.Table:
        return pa.Table.from_pylist(list(self.certificates.values()), schema=pa.schema([
            ("province_code", pa.string()), ("holder_id", pa.int64()), ("parcel_id", pa.int64()),
            ("deleted", pa.bool_())]))

    def parcel_table(self) -> pa.Table:
        return pa.Table.from_pylist(list(self.parcels.values()), schema=pa.schema([
            ("province_code", pa.string()), ("parcel_id", pa.int64()), ("commune_code_original", pa.string()),
            ("commune_code_2025", pa.string()), ("deleted", pa.bool_())]))

    def duplicates(self) -> pa.Table:
        citizens = self.citizen_table()
        dups = dedupe.citizen_duplicates(citizens)
        left_out = citizens.filter(pc.is_in(citizens["full_name"], value_set=pa.array(sorted(self.unclustered),
                                                                                       pa.string())))["citizen_id"]
        return dups.filter(pc.invert(pc.is_in(dups["record_key"], value_set=left_out.combine_chunks())))

    def model_table(self) -> pa.Table:
        keys = sorted(self.model)
        return pa.table({"left_id": keys, "right_id": [self.model[k][0] for k in keys],
                         "score": pa.array([self.model[k][1] for k in keys], pa.float64())})


def _whole(world: World) -> tuple[pa.Table, pa.Table, int]:
    """The reference: the pass computed whole, as `reconcile.run` did before it kept state."""
    citizens = world.citizen_table()
    left = idless.idless_inputs(world.holder_table(), world.certificate_table(), world.parcel_table())
    links, review = idless.link_idless(left, idless.registry_with_places(citizens), BANDS,
                                       model_links=world.model_table(),
                                       duplicates=world.duplicates())
    return links, review, left.num_rows


def _run(world: World, tmp: Path, citizen_ref: str, bases: list[str] | None,
         batched: bool = False) -> idlessstate.Result:
    """`batched`: the citizens given as the reconciliation gives them, a function reading them in batches (of 7
    rows here, so namesakes and duplicate clusters fall in different batches)."""
    holders = world.holder_table()
    person = holders.filter(pc.and_(pc.equal(holders["holder_type"], "CA_NHAN"), pc.invert(holders["deleted"])))
    table = world.citizen_table().drop_columns(["_merge_key", "_record_hash", "status"])
    reads: list[int] = []

    def read() -> pa.RecordBatchReader:
        reads.append(1)
        return table.to_reader(max_chunksize=7)

    citizens: idlessstate.Citizens = read if batched else table
    result = idlessstate.update(
        tmp / "integrated", person_holders=person, certificates=world.certificate_table(),
        parcels=world.parcel_table(), citizens=citizens,
        model_links=world.model_table(), duplicates=world.duplicates(), citizen_ref=citizen_ref,
        bases=bases, bands=BANDS, settings=load_settings(), run_id="test")
    assert not batched or reads, "the citizens were never read"
    return result


@pytest.mark.parametrize(("seed", "batched"), [(1, False), (2, True), (3, False), (4, True)])
def test_the_state_equals_the_whole_pass_after_every_random_change(seed: int, batched: bool, tmp_path: Path):
    rng = random.Random(seed)
    world = World(rng)
    staged = tmp_path / "staged" / "citizen"

    def stage() -> str:
        commit = zones.create(staged, world.citizen_table(), run_id="test")
        return zones.ref(staged, commit.version or 0)

    last = stage()
    first = _run(world, tmp_path, last, [], batched)  # no state yet: full
    assert first.mode == "full"
    unfinished: list[str] = []
    modes = []
    for step in range(14):
        kinds = [world.change() for _ in range(rng.choice([1, 2, 3]))]
        ref = stage()
        fate = rng.choice(["ok", "ok", "ok", "killed_after_commit", "killed_before_commit"])
        if fate == "killed_before_commit":  # the run started (the ledger holds its inputs) and wrote nothing
            unfinished.append(ref)
            continue
        result = _run(world, tmp_path, ref, [last, *unfinished], batched)
        modes.append(result.mode)
        links, review, n = _whole(world)
        assert result.links.to_pylist() == links.to_pylist(), (step, kinds)
        assert result.review.to_pylist() == review.to_pylist(), (step, kinds)
        assert result.left.num_rows == n
        assert result.links.schema == links.schema and result.review.schema == review.schema
        if fate == "killed_after_commit":
            unfinished.append(ref)
        else:
            last, unfinished = ref, []
    assert modes.count("change") == len(modes)


def test_full_when_the_state_reflects_no_base_or_the_rules_changed(tmp_path: Path, monkeypatch):
    world = World(random.Random(9))
    staged = tmp_path / "staged" / "citizen"
    v0 = zones.ref(staged, zones.create(staged, world.citizen_table(), run_id="t").version or 0)
    assert _run(world, tmp_path, v0, [v0]).mode == "full"  # no state yet
    world.change()
    v1 = zones.ref(staged, zones.create(staged, world.citizen_table(), run_id="t").version or 0)
    assert _run(world, tmp_path, v1, [v0]).mode == "change"
    # the state reflects v1; bases that do not name it
    assert _run(world, tmp_path, v1, [v0]).mode == "full"
    assert _run(world, tmp_path, v1, [v1]).mode == "change"
    monkeypatch.setattr(idlessstate, "rules_fingerprint", lambda bands, address=True: "other")
    assert _run(world, tmp_path, v1, [v1]).mode == "full"
    # no bases: computed whole, the state left as it is
    before = zones.version(idlessstate.table_path(tmp_path / "integrated"))
    result = _run(world, tmp_path, v1, None)
    assert result.mode == "whole" and zones.version(idlessstate.table_path(tmp_path / "integrated")) == before
