"""Simulated business registration system: REST + XML with an API key (agency-systems.md §2).

Owns: the FastAPI app (`create_app`) serving `business/enterprises.parquet` as the offset-paged
enterprise list, the XML rendering of a record (ElementTree, so text is escaped properly), and the
in-memory update-time changes that `touch` and the `change_during_walk` fault make. Times are local
(Asia/Ho_Chi_Minh, no offset) as the registry writes them; Vietnam has no daylight saving, so local
wall-clock order is instant order.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.responses import Response

from sandbox.faults import FaultState, FaultSwitches, control_router, fault_body_response

log = logging.getLogger(__name__)

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
XML_MEDIA_TYPE = "application/xml; charset=utf-8"
LOCAL_FORMAT = "%d/%m/%Y %H:%M:%S"
VN_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
_LOCAL_EPOCH = datetime(1970, 1, 1)
# characters XML 1.0 forbids; mis-decoded legacy text can carry them and one would make the page unparseable
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def local_seconds(value: datetime) -> int:
    """Local wall-clock time -> seconds since the local epoch (the sort key; an aware time is first
    converted to Vietnam time)."""
    if value.tzinfo is not None:
        value = value.astimezone(VN_TZ).replace(tzinfo=None)
    return int((value - _LOCAL_EPOCH).total_seconds())


def format_local(seconds: int) -> str:
    return (_LOCAL_EPOCH + timedelta(seconds=int(seconds))).strftime(LOCAL_FORMAT)


def parse_update_time(text: str) -> int:
    """`dd/mm/yyyy HH:MM:SS` (local) or RFC 3339 with an offset -> local seconds."""
    try:
        return local_seconds(datetime.strptime(text.strip(), LOCAL_FORMAT))
    except ValueError:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if value.tzinfo is None:
            raise ValueError(
                f"{text!r}: use dd/mm/yyyy HH:MM:SS (local) or RFC 3339 with an offset"
            ) from None
        return local_seconds(value)


class EnterpriseStore:
    """The enterprise records and their order (NgayCapNhat, MaSoDN). Kept as an Arrow table plus numpy
    sort keys; rows become dicts only for the page being served."""

    def __init__(self, path: Path) -> None:
        table = pq.read_table(path)
        self.table = table.select([name for name in table.column_names if not name.startswith("_")])
        try:
            stamps = pc.strptime(self.table["NgayCapNhat"], format=LOCAL_FORMAT, unit="s")
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{path}: NgayCapNhat is not dd/mm/yyyy HH:MM:SS: {exc}") from exc
        self._base_ts = stamps.cast(pa.int64()).fill_null(0).to_numpy().astype(np.int64)
        self._ids = np.array(self.table["MaSoDN"].fill_null("").to_pylist(), dtype=str)
        self.lock = threading.RLock()
        self.reset()
        log.info("business registry: %d enterprises from %s", len(self), path)

    def reset(self) -> None:
        with self.lock:
            self._ts = self._base_ts.copy()
            self._overrides: dict[int, str] = {}
            self._resort()

    def _resort(self) -> None:
        # re-sorting on every change is fine here: changes are rare and offset paging has no keys to patch
        self._order = np.lexsort((np.arange(len(self._ts)), self._ids, self._ts))
        self._sorted_ts = self._ts[self._order]

    def __len__(self) -> int:
        return len(self._ids)

    def start_of(self, since: int | None) -> int:
        return 0 if since is None else int(np.searchsorted(self._sorted_ts, since, "left"))

    def rows_between(self, start: int, end: int) -> list[int]:
        return [int(r) for r in self._order[max(start, 0) : max(end, 0)]]

    def freshest(self) -> int:
        """One second after the newest update: the sandbox's "now" for changes (no wall clock)."""
        return int(self._ts.max(initial=0)) + 1

    def rows_for_id(self, ident: str) -> list[int]:
        return [int(r) for r in np.flatnonzero(self._ids == ident)]

    def set_times(self, changes: dict[int, int]) -> None:
        with self.lock:
            for row, seconds in changes.items():
                self._ts[row] = seconds
                self._overrides[row] = format_local(seconds)
            self._resort()

    def records(self, rows: list[int]) -> list[dict[str, Any]]:
        if not rows:
            return []
        items = self.table.take(pa.array(rows, pa.int64())).to_pylist()
        for row, item in zip(rows, items, strict=True):
            if row in self._overrides:
                item["NgayCapNhat"] = self._overrides[row]
        return items


def render_page(records: list[dict[str, Any]], *, total: int, offset: int, limit: int) -> bytes:
    """The `<DanhSachDoanhNghiep>` document of the spec, UTF-8, with an XML declaration. Null values
    are left out (an absent element, as MaHuyen for post-2025 addresses)."""
    root = ET.Element("DanhSachDoanhNghiep", tongSo=str(total), offset=str(offset), limit=str(limit))
    for record in records:
        node = ET.SubElement(root, "DoanhNghiep")
        for name in ("MaSoDN", "TenDN", "TenTiengAnh", "LoaiHinh", "NgayThanhLap", "TinhTrang"):
            _leaf(node, name, record.get(name))
        if record.get("VonDieuLe") is not None:
            _leaf(node, "VonDieuLe", record["VonDieuLe"]).set("donVi", "VND")
        address = record.get("TruSo")
        if address is not None:
            office = ET.SubElement(node, "TruSo")
            for name in ("DiaChi", "MaXa", "MaHuyen", "MaTinh"):
                _leaf(office, name, address.get(name))
        trades = record.get("NganhNghe")
        if trades is not None:
            holder = ET.SubElement(node, "NganhNghe")
            for trade in trades:
                entry = ET.SubElement(holder, "Nganh", ma=_clean(trade.get("ma")))
                entry.set("chinh", "true" if trade.get("chinh") else "false")
        for person in record.get("NguoiDaiDien") or []:
            rep = ET.SubElement(node, "NguoiDaiDien")
            for name in ("HoTen", "LoaiGiayTo", "SoGiayTo", "NgaySinh", "ChucDanh"):
                _leaf(rep, name, person.get(name))
        _leaf(node, "NgayCapNhat", record.get("NgayCapNhat"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _leaf(parent: ET.Element, name: str, value: Any) -> ET.Element:
    if value is None:
        return ET.Element(name)  # detached: a null is not published
    child = ET.SubElement(parent, name)
    child.text = _clean(value)
    return child


def _clean(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", "" if value is None else str(value))


def _xml_error(status: int, message: str) -> Response:
    root = ET.Element("Loi")
    ET.SubElement(root, "MaLoi").text = str(status)
    ET.SubElement(root, "MoTa").text = message
    return Response(
        ET.tostring(root, encoding="utf-8", xml_declaration=True), status, media_type=XML_MEDIA_TYPE
    )


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {low}..{high if high is not None else ''}, got {value}")
    return value


def create_app(
    data_dir: Path | str, *, api_keys: set[str], faults: FaultSwitches | FaultState | None = None
) -> FastAPI:
    """The business registry over `data_dir/business/enterprises.parquet`, accepting `api_keys`."""
    store = EnterpriseStore(Path(data_dir) / "business" / "enterprises.parquet")
    state = faults if isinstance(faults, FaultState) else FaultState(faults)
    state.on_reset(store.reset)
    keys = [key.encode() for key in api_keys]

    app = FastAPI(title="Sandbox business registry", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = state
    app.state.store = store

    @app.get("/dkkd/v2/doanh-nghiep")
    def list_enterprises(request: Request) -> Response:
        state.count("doanh-nghiep")
        offered = request.headers.get("x-api-key", "").encode()
        # compare with every key so the time taken does not tell which prefix matched
        if not offered or not any([hmac.compare_digest(offered, key) for key in keys]):
            return _xml_error(403, "API key missing or not valid")
        query = request.query_params
        try:
            offset = _int_param(query.get("offset"), "offset", 0, 0, None)
            limit = _int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            since = None
            if query.get("tuNgay"):
                try:
                    since_day = datetime.strptime(query["tuNgay"].strip(), "%d/%m/%Y").date()
                except ValueError:
                    raise ValueError(f"tuNgay must be dd/mm/yyyy, got {query['tuNgay']!r}") from None
                since = local_seconds(datetime.combine(since_day, datetime.min.time()))
        except ValueError as exc:
            return _xml_error(400, str(exc))
        fault = state.next_data_fault()
        if fault in ("rate_limit", "server_error"):
            return state.error_response(fault)
        with store.lock:
            start = store.start_of(since)
            total = len(store) - start
            rows = store.rows_between(start + offset, start + offset + limit)
            records = store.records(rows)
            if offset == 0 and rows and state.switches.change_during_walk:
                moved = [rows[0], *store.rows_between(start + limit + 1, start + limit + 2)]
                fresh = store.freshest()
                store.set_times({row: fresh + i for i, row in enumerate(moved)})
                state.note("change_during_walk")
        state.served(len(records))
        body = render_page(records, total=total, offset=offset, limit=limit)
        return fault_body_response(fault, body, XML_MEDIA_TYPE)

    def touch(body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of MaSoDN strings")
        with store.lock:
            at = parse_update_time(body["at"]) if body.get("at") else store.freshest()
            changes: dict[int, int] = {}
            missing = []
            for ident in ids:
                rows = store.rows_for_id(ident)
                changes.update(dict.fromkeys(rows, at))
                if not rows:
                    missing.append(ident)
            store.set_times(changes)
        log.info("touched %d enterprise records to %s", len(changes), format_local(at))
        return {
            "touched": [i for i in ids if i not in missing],
            "notFound": missing,
            "NgayCapNhat": format_local(at),
        }

    app.include_router(control_router(state, touch))
    return app
