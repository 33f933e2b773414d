"""A second, minimal business registry that follows spec §2, written from the text and sharing no code
with `sandbox/`: the connector must work against any server that follows the spec, not only ours.

Owns: a standard-library HTTP server (`http.server`, one thread per request) on 127.0.0.1 and a free port,
a small in-memory list of enterprise records rendered as the spec's XML, `X-API-Key` checking (403), offset
paging filtered by `tuNgay` (local day, inclusive) and ordered by (NgayCapNhat, MaSoDN), and its own fault
switches, counted over authorised list requests: `rate_limit_every` (+ `retry_after`), `server_error_every`
(502, 503, 504 in turn), `drop_connection_every` (full Content-Length, half the body, close),
`truncate_body_every` (a complete 200 with half the XML), `duplicate_across_pages` (a page after the first
starts with the record before its offset), `change_during_walk` (after an offset-0 page, its first record
and the second record after it get fresh update times and move to the end, so later records shift left).
"""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOCAL_FORMAT = "%d/%m/%Y %H:%M:%S"
PATH = "/dkkd/v2/doanh-nghiep"
FAULT_DEFAULTS: dict[str, Any] = {
    "rate_limit_every": 0,
    "retry_after": 1,
    "server_error_every": 0,
    "drop_connection_every": 0,
    "truncate_body_every": 0,
    "duplicate_across_pages": False,
    "change_during_walk": False,
}


def sample_records(n: int = 30, start: datetime = datetime(2025, 6, 28, 9, 0, 0)) -> list[dict[str, Any]]:
    """`n` enterprises over a few days, several per second (ties on NgayCapNhat are ordered by MaSoDN),
    pre-2025 three-level addresses before 2025-07-01, a few with several representatives, one in legacy
    mojibake, one in decomposed Unicode."""
    records = []
    for i in range(n):
        updated = start + timedelta(hours=7 * (i // 3), seconds=i % 2)
        old = updated < datetime(2025, 7, 1)
        name = f"CÔNG TY TNHH THƯƠNG MẠI SỐ {i}"
        if i == 5:
            name = "C«ng ty TNHH Th\u00a5¬ng m¹i"
        elif i == 6:
            name = "CÔNG TY CỔ PHẦN ĐẠI DƯƠNG".replace("Ô", "O\u0302")
        reps = [
            {"HoTen": f"Nguyễn Văn {chr(65 + k)}", "LoaiGiayTo": "CCCD", "SoGiayTo": f"0311850{i:03d}{k:02d}",
             "NgaySinh": "02/09/1985", "ChucDanh": "Giám đốc" if k == 0 else "Thành viên"}
            for k in range(1 + (i % 4 == 0) + (i % 8 == 0))
        ]
        records.append({
            "MaSoDN": f"0200{(7919 * i) % 1000000:06d}",  # not in time order: ties are broken by this code
            "TenDN": name,
            "TenTiengAnh": f"TRADING NO {i} CO., LTD",
            "LoaiHinh": ("TNHH_1TV", "TNHH_2TV", "CO_PHAN")[i % 3],
            "NgayThanhLap": "14/05/2019",
            "TinhTrang": "DANG_HOAT_DONG",
            "VonDieuLe": str(1_000_000_000 + i),
            "TruSo": {"DiaChi": f"Số {i} Lạch Tray", "MaXa": "11320" if old else "11311",
                      "MaHuyen": "303" if old else None, "MaTinh": "31"},
            "NganhNghe": [{"ma": "4711", "chinh": True}, {"ma": "4632", "chinh": False}][: 1 + i % 2],
            "NguoiDaiDien": reps,
            "NgayCapNhat": updated.strftime(LOCAL_FORMAT),
        })
    return records


def render(records: list[dict[str, Any]], total: int, offset: int, limit: int) -> bytes:
    root = ET.Element("DanhSachDoanhNghiep", tongSo=str(total), offset=str(offset), limit=str(limit))
    for rec in records:
        node = ET.SubElement(root, "DoanhNghiep")
        for name in ("MaSoDN", "TenDN", "TenTiengAnh", "LoaiHinh", "NgayThanhLap", "TinhTrang"):
            ET.SubElement(node, name).text = rec[name]
        ET.SubElement(node, "VonDieuLe", donVi="VND").text = rec["VonDieuLe"]
        office = ET.SubElement(node, "TruSo")
        for name in ("DiaChi", "MaXa", "MaHuyen", "MaTinh"):
            if rec["TruSo"].get(name) is not None:
                ET.SubElement(office, name).text = rec["TruSo"][name]
        trades = ET.SubElement(node, "NganhNghe")
        for trade in rec["NganhNghe"]:
            ET.SubElement(trades, "Nganh", ma=trade["ma"], chinh="true" if trade["chinh"] else "false")
        for person in rec["NguoiDaiDien"]:
            rep = ET.SubElement(node, "NguoiDaiDien")
            for name in ("HoTen", "LoaiGiayTo", "SoGiayTo", "NgaySinh", "ChucDanh"):
                ET.SubElement(rep, name).text = person[name]
        ET.SubElement(node, "NgayCapNhat").text = rec["NgayCapNhat"]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


class MinimalBusinessServer:
    """`with MinimalBusinessServer(records, api_key) as server:` -> `server.url`; `set_faults`, `reset`,
    `touch`, `stats` are plain methods (the test holds the server object, no control routes needed)."""

    def __init__(self, records: list[dict[str, Any]], api_key: str) -> None:
        self._initial = [dict(r) for r in records]
        self.api_key = api_key
        self.lock = threading.Lock()
        self.reset()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="minimal-business", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> MinimalBusinessServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- control -------------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.records = [dict(r) for r in self._initial]
            self.faults = dict(FAULT_DEFAULTS)
            self.data_requests = 0
            self.requests = 0
            self.injected: Counter[str] = Counter()
            self.items_served = 0
            self._error_turn = 0

    def set_faults(self, **switches: Any) -> None:
        unknown = set(switches) - set(FAULT_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown fault switches {sorted(unknown)}")
        with self.lock:
            self.faults.update(switches)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"data_requests": self.data_requests, "requests": self.requests,
                    "faults_injected": dict(self.injected), "items_served": self.items_served}

    def touch(self, codes: list[str], at: datetime | None = None) -> str:
        """Give records a new update time (default: one second after the newest); returns it as sent."""
        with self.lock:
            stamp = (at or self._newest() + timedelta(seconds=1)).strftime(LOCAL_FORMAT)
            for rec in self.records:
                if rec["MaSoDN"] in codes:
                    rec["NgayCapNhat"] = stamp
            return stamp

    def _newest(self) -> datetime:
        return max(datetime.strptime(r["NgayCapNhat"], LOCAL_FORMAT) for r in self.records)

    def _ordered(self, since: datetime | None) -> list[dict[str, Any]]:
        rows = [(datetime.strptime(r["NgayCapNhat"], LOCAL_FORMAT), r["MaSoDN"], r) for r in self.records]
        return [r for t, _, r in sorted(rows, key=lambda x: (x[0], x[1])) if since is None or t >= since]

    # --- HTTP ----------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with server.lock:
                    server.requests += 1
                parts = urlsplit(self.path)
                if parts.path != PATH:
                    return self._send(404, b"<Loi><MaLoi>404</MaLoi></Loi>")
                if self.headers.get("X-API-Key") != server.api_key:
                    return self._send(403, b"<Loi><MaLoi>403</MaLoi><MoTa>API key</MoTa></Loi>")
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                try:
                    offset = int(query.get("offset", "0"))
                    limit = int(query.get("limit", "100"))
                    since = datetime.strptime(query["tuNgay"], "%d/%m/%Y") if query.get("tuNgay") else None
                    if offset < 0 or not 1 <= limit <= 500:
                        raise ValueError("offset >= 0, limit 1..500")
                except ValueError as exc:
                    return self._send(400, f"<Loi><MaLoi>400</MaLoi><MoTa>{exc}</MoTa></Loi>".encode())
                fault = server._next_fault()
                if fault == "rate_limit":
                    return self._send(429, b'{"error":"rate_limited"}', "application/json",
                                      {"Retry-After": str(server.faults["retry_after"])})
                if fault == "server_error":
                    with server.lock:
                        status = (502, 503, 504)[server._error_turn % 3]
                        server._error_turn += 1
                    return self._send(status, b'{"error":"upstream"}', "application/json")
                body = server._page(since, offset, limit)
                if fault == "drop_connection":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if fault == "truncate_body":
                    body = body[: len(body) // 2]
                return self._send(200, body)

            def _send(self, status: int, body: bytes, ctype: str = "application/xml; charset=utf-8",
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _next_fault(self) -> str | None:
        with self.lock:
            self.data_requests += 1
            n = self.data_requests
            for name in ("drop_connection", "server_error", "rate_limit", "truncate_body"):
                every = self.faults[f"{name}_every"]
                if every and n % every == 0:
                    self.injected[name] += 1
                    return name
            return None

    def _page(self, since: datetime | None, offset: int, limit: int) -> bytes:
        with self.lock:
            rows = self._ordered(since)
            if self.faults["duplicate_across_pages"] and offset > 0:
                page = rows[offset - 1 : offset - 1 + limit]
                self.injected["duplicate_across_pages"] += 1
            else:
                page = rows[offset : offset + limit]
            body = render(page, len(rows), offset, limit)
            self.items_served += len(page)
            if offset == 0 and page and self.faults["change_during_walk"]:
                moved = [page[0]] + rows[limit + 1 : limit + 2]
                fresh = self._newest()
                for k, rec in enumerate(moved, start=1):
                    rec["NgayCapNhat"] = (fresh + timedelta(seconds=k)).strftime(LOCAL_FORMAT)
                self.injected["change_during_walk"] += 1
            return body
