"""TLS options from the connection's extras, against a real HTTPS server on localhost: the minimal population
registry (agency-systems.md §1) served by uvicorn with a certificate from a private CA generated here (the
`cryptography` package Airflow installs). Verification is on by default, so the private CA is refused until
the connection's `verify` names its file; a server that asks for a client certificate gets the one the
connection's `cert` names."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.base.errors import SourceError
from connectors.population.client import PopulationRegistryClient

from .minimal_population_server import MinimalPopulationRegistry

pytestmark = pytest.mark.integration

RECORDS = [{"soDinhDanh": f"03120300{i:04d}", "hoVaTen": f"Người {i}", "trangThai": "CON_SONG",
            "capNhatLuc": f"2026-11-20T08:{i:02d}:00+07:00"} for i in range(5)]


# --- a private CA ----------------------------------------------------------------------------------------
@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(subject: str, key, issuer: x509.Certificate | None, issuer_key, *, ca: bool = False,
           usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("lienthong test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _issue("localhost", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("lienthong connector", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(_write_cert(ca, out / "ca.pem"), _write_cert(server, out / "server.pem"),
               _write_key(server_key, out / "server.key"), _write_cert(client, out / "client.pem"),
               _write_key(client_key, out / "client.key"))


# --- the HTTPS registry ----------------------------------------------------------------------------------
class HttpsServer:
    def __init__(self, registry: MinimalPopulationRegistry, pki: Pki, *, client_cert_required: bool):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        tls: dict[str, Any] = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
        if client_cert_required:
            tls |= {"ssl_ca_certs": str(pki.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self.server = uvicorn.Server(uvicorn.Config(registry.app(), host="127.0.0.1", port=self.port,
                                                    log_level="critical", **tls))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> HttpsServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("HTTPS test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def registry() -> MinimalPopulationRegistry:
    return MinimalPopulationRegistry([dict(r) for r in RECORDS])


@pytest.fixture(scope="module")
def https(registry: MinimalPopulationRegistry, pki: Pki) -> Iterator[HttpsServer]:
    with HttpsServer(registry, pki, client_cert_required=False) as server:
        yield server


@pytest.fixture(scope="module")
def mutual(registry: MinimalPopulationRegistry, pki: Pki) -> Iterator[HttpsServer]:
    with HttpsServer(registry, pki, client_cert_required=True) as server:
        yield server


@pytest.fixture(autouse=True)
def no_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def client_for(monkeypatch: pytest.MonkeyPatch, server: HttpsServer, registry: MinimalPopulationRegistry,
               **extra: Any) -> PopulationRegistryClient:
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_TLS", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "https",
        "login": registry.client_id, "password": registry.client_secret, "extra": extra}))
    return PopulationRegistryClient.from_connection("population_tls", attempts=1, timeout=10.0)


def walk(client: PopulationRegistryClient) -> list[str]:
    return [c["soDinhDanh"] for page in client.iter_citizen_pages("1970-01-01T00:00:00Z", 2) for c in page]


def test_a_private_ca_is_refused_by_default(monkeypatch, https, registry):
    with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
        walk(client_for(monkeypatch, https, registry))


def test_verify_naming_the_ca_file_lets_the_walk_through(monkeypatch, https, registry, pki):
    assert walk(client_for(monkeypatch, https, registry, verify=str(pki.ca))) == [r["soDinhDanh"] for r in RECORDS]


def test_verify_true_from_the_uri_form_still_refuses_the_private_ca(monkeypatch, https, registry):
    with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
        walk(client_for(monkeypatch, https, registry, verify="true"))


def test_a_server_asking_for_a_client_certificate_gets_the_one_the_connection_names(monkeypatch, mutual, registry, pki):
    with pytest.raises(SourceError):
        walk(client_for(monkeypatch, mutual, registry, verify=str(pki.ca)))
    got = walk(client_for(monkeypatch, mutual, registry, verify=str(pki.ca),
                          cert=[str(pki.client_cert), str(pki.client_key)]))
    assert got == [r["soDinhDanh"] for r in RECORDS]
