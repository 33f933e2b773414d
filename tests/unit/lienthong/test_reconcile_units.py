"""The small parts of reconciliation: bands, name keys, the person shape of each source, in-source duplicate
rules and the organisation link passes, on hand-made tables."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from lienthong.reconcile import dedupe, people, sources
from lienthong.reconcile.organisations import link_holder_organisations


def test_bands_follow_the_thresholds_and_reject_bad_settings():
    b = people.LinkBands(accept=0.95, review=0.8)
    assert [b.band(p) for p in (0.99, 0.95, 0.9, 0.8, 0.5, None)] == ["accept", "accept", "review", "review",
                                                                      "reject", "reject"]
    with pytest.raises(ValueError, match="review"):
        people.LinkBands(accept=0.7, review=0.8)


def test_name_keys_fold_accents_case_and_order():
    parts = people.name_parts(pa.array(["Nguyễn Văn An", "NGUYỄN VĂN AN", "An Nguyễn Văn", "Đặng  Thị Hoà", None]))
    assert parts["name_fold"].to_pylist() == ["nguyen van an", "nguyen van an", "an nguyen van", "dang thi hoa", None]
    assert parts["name_sorted"].to_pylist()[:3] == ["an nguyen van"] * 3
    assert parts["family_name"].to_pylist()[:2] == ["nguyen", "nguyen"]
    assert parts["given_name"].to_pylist()[3] == "hoa"


def test_commune_names_lose_their_unit_word():
    assert people.fold_commune(pa.array(["Xã Tân Dân", "Phường Văn Chương", "Thị trấn Nam Sách", None])).to_pylist() \
        == ["tan dan", "van chuong", "nam sach", None]


def test_representatives_split_current_and_legacy_ids():
    reps = pa.table({
        "enterprise_code": ["0100000001", "0100000001", "0100000002"],
        "position": [0, 1, 0],
        "full_name": ["Lê Văn Bình", "Trần Thị Cúc", "Phạm An"],
        "document_type": ["CCCD", "CMND", None],
        "document_number": ["031090001234", "123456789", None],
        "birth_date": [dt.date(1990, 5, 1), dt.date(1985, 1, 2), None],
    })
    p = sources.representatives_as_people(reps).to_pylist()
    assert [r["unique_id"] for r in p] == ["0100000001#0", "0100000001#1", "0100000002#0"]
    assert (p[0]["id_number"], p[0]["legacy_id"]) == ("031090001234", None)
    assert (p[1]["id_number"], p[1]["legacy_id"]) == (None, "123456789")
    assert p[1]["birth_year"] == 1985 and p[2]["birth_year"] is None


def test_land_holder_addresses_split_into_street_and_commune():
    holders = pa.table({
        "province_code": ["01"], "holder_id": [7], "name": ["Nguyễn Thị Hà"], "document_type": ["CCCD"],
        "document_number": ["001190000111"], "birth_year": [1990], "address": ["Thôn Phú, Xã Đoàn Tùng"],
    })
    (p,) = sources.holders_as_people(holders).to_pylist()
    assert (p["unique_id"], p["street"], p["commune"]) == ("01:7", "thon phu", "doan tung")


def test_citizen_duplicates_need_every_identifying_field_equal():
    base = {"legacy_id": None, "full_name": "Lê Văn Bình", "birth_date": dt.date(1990, 5, 1),
            "birth_date_precision": "day", "sex": "NAM", "residence_commune_code_2025": "11224",
            "household_id": "HK-1", "source_updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    rows = [
        {**base, "citizen_id": "031090000001", "legacy_id": "123456789"},
        {**base, "citizen_id": "031090000002", "full_name": "LÊ VĂN BÌNH"},  # same person, other ID
        {**base, "citizen_id": "031090000003", "birth_date": dt.date(1990, 5, 2)},  # born a day later: not a duplicate
    ]
    d = dedupe.citizen_duplicates(pa.Table.from_pylist(rows)).to_pylist()
    assert {(r["record_key"], r["survivor_key"]) for r in d} == {("031090000001", "031090000001"),
                                                                  ("031090000002", "031090000001")}


def test_citizen_duplicates_read_in_batches_are_those_of_the_whole_table():
    """The reconciliation hands the citizens to the duplicate rules a batch at a time: clusters whose records
    fall in different batches (and a batch with no dated row) come out as from the whole table."""
    base = {"legacy_id": None, "birth_date_precision": "day", "sex": "NAM", "residence_commune_code_2025": "11224",
            "household_id": None, "source_updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    names = ["Lê Văn Bình", "Trần Thị Hoa", "Phạm Văn Cường"]
    rows = [{**base, "citizen_id": f"0310900000{i:02d}", "full_name": names[i % 3].upper() if i % 2 else names[i % 3],
             "birth_date": None if i in (3, 4, 5) else dt.date(1990, 5, 1 + i % 2),
             "legacy_id": "12345678" + str(i) if i == 7 else None,
             "household_id": "HK-1" if i % 4 == 0 else None} for i in range(20)]
    table = pa.Table.from_pylist(rows)
    whole = dedupe.citizen_duplicates(table)
    assert whole.num_rows >= 8  # clusters there are to find
    for size in (1, 3, 7):
        assert dedupe.citizen_duplicates(table.to_reader(max_chunksize=size)).equals(whole), size
    assert dedupe.citizen_duplicates(table.slice(0, 0).to_reader()).num_rows == 0


def test_enterprise_and_holder_duplicates_read_in_batches_are_those_of_the_whole_table():
    """Enterprises and land holders reach their duplicate rules a batch at a time too (every column of the
    staged table, as the session gives them): the same clusters as from the whole table, deleted holders out."""
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    names = ["CÔNG TY TNHH AN PHÁT", "Công ty TNHH An Phát", "CÔNG TY CỔ PHẦN BÌNH MINH"]
    enterprises = pa.Table.from_pylist([
        {"enterprise_code": f"01000000{i:02d}", "name": names[i % 3], "legal_form": "TNHH",
         "founded_on": dt.date(2010, 1, 1 + (i % 4 == 3)), "head_office_commune_code_2025": "00004",
         "source_updated_at": when + dt.timedelta(days=i % 5)} for i in range(20)])
    holders = pa.Table.from_pylist([
        {"province_code": "31" if i % 5 else "01", "holder_id": i, "holder_type": "CA_NHAN" if i % 2 else "TO_CHUC",
         "name": ["Nguyễn Thị Hà", "NGUYỄN THỊ HÀ"][i % 2], "document_number": None if i % 3 else "001190000111",
         "address": "Thôn Phú", "deleted": i == 8} for i in range(24)])
    for rule, table in ((dedupe.enterprise_duplicates, enterprises), (dedupe.holder_duplicates, holders)):
        whole = rule(table)
        assert whole.num_rows >= 8, rule  # clusters there are to find
        for size in (1, 3, 7):
            assert rule(table.to_reader(max_chunksize=size)).equals(whole), (rule, size)
        assert rule(table.slice(0, 0).to_reader()).num_rows == 0
    assert "01:8" not in dedupe.holder_duplicates(holders.to_reader(max_chunksize=3))["record_key"].to_pylist()


def test_organisation_holders_link_by_tax_code_then_by_name_and_street():
    enterprises = pa.table({
        "enterprise_code": ["0100000001", "0100000002", "0100000003", "0100000004"],
        "name": ["CÔNG TY TNHH AN PHÁT", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY TNHH CÁT"],
        "head_office_address": ["Số 1 Lê Lợi", "Số 2 Trần Phú", "Số 9 Hùng Vương", "Số 3 Lý Thái Tổ"],
    })
    duplicates = pa.table({"record_key": ["0100000004"], "survivor_key": ["0100000001"], "cluster_size": [2]},
                          schema=dedupe.DUPLICATE_SCHEMA)
    holders = pa.table({
        "province_code": ["31"] * 5, "holder_id": [1, 2, 3, 4, 5],
        "name": ["Công ty TNHH An Phát", "CÔNG TY TNHH AN PHÁT", "CÔNG TY CỔ PHẦN BÌNH MINH", "CÔNG TY TNHH CÁT", "X"],
        "document_number": ["0100000001", "0100000009", "0100000008", "0100000004", None],
        "address": ["Số 1 Lê Lợi, Phường A", "Số 1 Lê Lợi, Phường A", "Số 2 Trần Phú, Phường B", "?", None],
    })
    links = {r["left_id"]: r for r in link_holder_organisations(holders, enterprises, duplicates).to_pylist()}
    assert (links["31:1"]["right_id"], links["31:1"]["method"], links["31:1"]["band"]) == ("0100000001", "exact_id", "accept")
    # unknown code, unique name, street agrees
    assert (links["31:2"]["right_id"], links["31:2"]["method"], links["31:2"]["band"]) == ("0100000001", "name_address", "accept")
    # two enterprises share the name: review, the one whose street agrees first
    assert (links["31:3"]["right_id"], links["31:3"]["band"]) == ("0100000002", "review")
    # a duplicate enterprise code resolves to its survivor
    assert links["31:4"]["right_id"] == "0100000001"
    assert (links["31:5"]["right_id"], links["31:5"]["band"]) == (None, "reject")


def test_the_id_less_pass_reads_only_its_holders_certificates_and_parcels_and_gets_what_the_whole_tables_give():
    """Reconcile gives the ID-less pass the rows its SQL superset selects (`run._IDLESS_*`), not the whole
    land tables; its inputs (`idlessstate.current_inputs`) are then those of the whole tables. Numbers that
    are blank in any way (spaces, a tab, a no-break space, empty) count as no number; others do not."""
    from lienthong.duck import session
    from lienthong.reconcile import idlessstate, run

    numbers = [None, "", "   ", "\t", "\u00a0", " \u2003 ", "012345678901", "A1", "-", "0"]
    holders = pa.table({
        "province_code": ["31"] * 14,
        "holder_id": [f"H{i}" for i in range(14)],
        "holder_type": ["CA_NHAN"] * 10 + ["TO_CHUC", "CA_NHAN", "CA_NHAN", "CA_NHAN"],
        "name": [f"Nguyễn Văn {i}" for i in range(14)],
        "document_type": ["CCCD"] * 14,
        "document_number": [*numbers, None, None, None, " "],
        "birth_year": [1980] * 14,
        "address": ["Thôn 1, Xã An Hải"] * 14,
        "deleted": [False] * 11 + [True, None, False],
    })
    certificates = pa.table({
        "province_code": ["31"] * 16, "holder_id": [f"H{i % 14}" for i in range(16)],
        "parcel_id": [f"P{i}" for i in range(16)], "deleted": [False] * 15 + [True]})
    parcels = pa.table({
        "province_code": ["31"] * 17, "parcel_id": [f"P{i}" for i in range(17)],
        "commune_code_original": ["10001"] * 17, "commune_code_2025": ["31001"] * 17, "deleted": [False] * 17})
    with session(purpose="test") as con:
        for name, table in (("land_holder", holders), ("certificate", certificates), ("parcel", parcels)):
            con.register(f"{name}_in", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_in")
        few = (run._arrow(con, "land_holder", run._IDLESS_HOLDERS),
               run._arrow(con, "certificate", run._IDLESS_CERTIFICATES),
               run._arrow(con, "parcel", run._IDLESS_PARCELS))
    whole = idlessstate.current_inputs(holders, certificates, parcels)
    assert idlessstate.current_inputs(*few).equals(whole)
    # every blank number is ID-less; "-" and "0" are numbers; the deleted and the organisation are not read
    assert whole["unique_id"].to_pylist() == ["31:H0", "31:H1", "31:H2", "31:H3", "31:H4", "31:H5", "31:H12", "31:H13"]
    # the superset reads "-" too (no letter or digit), which the pass then finds to be a number
    assert few[0]["holder_id"].to_pylist() == ["H0", "H1", "H2", "H3", "H4", "H5", "H8", "H12", "H13"]
    assert few[1].num_rows < certificates.num_rows and few[2].num_rows < parcels.num_rows


def test_a_batched_read_of_the_session_survives_a_nested_session(monkeypatch):
    """The citizens are read from the reconciliation's session a batch at a time while the steps open
    sessions of their own, which set the memory limit on every open session: a read on the session itself
    ends there without an error; `run._batches` reads on a cursor of its own, so every row comes."""
    from lienthong.duck import session
    from lienthong.reconcile import run

    monkeypatch.setitem(run._ARROW_COLUMNS, "citizen", ["citizen_id", "full_name"])

    def read_with_a_session_opened(reader: pa.RecordBatchReader) -> list[str]:
        ids: list[str] = []
        for i, batch in enumerate(reader):
            ids.extend(batch.column("citizen_id").to_pylist())
            if i == 0:
                with session(purpose="dedupe") as inner:
                    inner.execute("SELECT 1")
        return ids

    with session(purpose="integrate", on_disk=True) as con:
        con.execute("""CREATE TABLE citizen AS
                       SELECT lpad(i::VARCHAR, 12, '0') AS citizen_id, 'Lê Văn ' || i AS full_name
                       FROM range(450000) t(i)""")
        expected = [f"{i:012d}" for i in range(450000)]
        bare = read_with_a_session_opened(con.execute("SELECT * FROM citizen").to_arrow_reader(200_000))
        assert len(bare) < len(expected)  # what the cursor is for: the bare read ended early
        read = run._batches(con, "citizen")
        assert read_with_a_session_opened(read()) == expected
        assert read_with_a_session_opened(read()) == expected  # each call a new read
        assert read().schema.names == ["citizen_id", "full_name"]
