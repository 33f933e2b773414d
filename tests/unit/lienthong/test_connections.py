"""Connections carry every extra: a postgres connection's extras reach libpq (all but the ignore-list), an http
connection's verify/cert/proxies/timeout are read as Airflow's HttpHook names them. No server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from lienthong.connections import POSTGRES_IGNORED_EXTRAS, ConnInfo, get_connection


def pg(**extra) -> ConnInfo:
    return ConnInfo("land_registry_31", "postgres", "db.example", 5432, "cadastre", "reader", "s3cret", extra)


def http(**extra) -> ConnInfo:
    return ConnInfo("population_registry", "http", "registry.example", 443, "https", "client", "s3cret", extra)


def test_every_libpq_extra_reaches_the_dsn(tmp_path: Path):
    extra = {
        "sslmode": "verify-full", "sslrootcert": "/etc/ssl/province-ca.pem", "sslcert": "/etc/ssl/client.crt",
        "sslkey": "/etc/ssl/client.key", "sslcrl": "/etc/ssl/crl.pem", "target_session_attrs": "read-only",
        "application_name": "land-31", "options": "-c statement_timeout=5000 -c search_path=cadastre",
        "connect_timeout": 7, "keepalives_idle": 30, "channel_binding": "prefer", "gssencmode": "disable",
    }
    params = parse_dsn(pg(**extra).postgres_dsn())
    assert params == {"host": "db.example", "port": "5432", "dbname": "cadastre", "user": "reader",
                      "password": "s3cret", **{k: str(v) for k, v in extra.items()}}


def test_a_json_boolean_reaches_libpq_as_1_or_0():
    params = parse_dsn(pg(keepalives=True, sslsni=False).postgres_dsn())
    assert params["keepalives"] == "1" and params["sslsni"] == "0"


def test_an_extra_wins_over_the_field_as_in_postgres_hook():
    assert parse_dsn(pg(dbname="other", port=6432).postgres_dsn())["dbname"] == "other"


def test_empty_extras_and_fields_are_left_out():
    info = ConnInfo("c", "postgres", "h", None, "d", None, None, {"sslmode": "", "options": None})
    assert parse_dsn(info.postgres_dsn()) == {"host": "h", "dbname": "d"}


def test_the_ignored_extras_never_reach_libpq():
    extra = dict.fromkeys(POSTGRES_IGNORED_EXTRAS, "x") | {
        "sqlalchemy_engine_kwargs": "{}", "extra__postgres__sslmode": "require", "sslmode": "require"}
    params = parse_dsn(pg(**extra).postgres_dsn())
    assert set(params) == {"host", "port", "dbname", "user", "password", "sslmode"}


def test_the_ignore_list_holds_every_key_postgres_hook_keeps_from_libpq():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    assert set(PostgresHook.ignored_extra_options) <= POSTGRES_IGNORED_EXTRAS
    assert {"batch_size", "overlap_seconds"} <= POSTGRES_IGNORED_EXTRAS, "the land connector's own extras"


def test_an_extra_libpq_does_not_know_fails_naming_connection_and_keyword_not_the_password():
    with pytest.raises(ValueError, match=r"connection 'land_registry_31'.*invalid connection option \"batchsize\"") as err:
        pg(batchsize=10).postgres_dsn()
    assert "s3cret" not in str(err.value)


def test_a_structured_extra_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"extra 'ssl' is a dict"):
        pg(ssl={"mode": "require"}).postgres_dsn()


def test_the_uri_form_carries_its_query_as_libpq_extras(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_LAND_REGISTRY_99",
                       "postgres://reader:pw@db.example:5432/cadastre?sslmode=require&target_session_attrs=read-only"
                       "&options=-c%20statement_timeout%3D5000&batch_size=100")
    params = parse_dsn(get_connection("land_registry_99").postgres_dsn())
    assert params["sslmode"] == "require" and params["target_session_attrs"] == "read-only"
    assert params["options"] == "-c statement_timeout=5000" and "batch_size" not in params


# --- http ------------------------------------------------------------------------------------------------
@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return {k: str(v) for k, v in files.items()}


def test_no_extras_no_http_options():
    assert http().http_options() == {}
    assert http(scope="citizens.read").http_options() == {}, "our own extras are no requests option"


@pytest.mark.parametrize("value, expected", [(False, False), (True, True), ("false", False), ("False", False),
                                             ("0", False), ("true", True), ("1", True), (0, False)])
def test_verify_is_a_boolean_in_either_form(value, expected):
    assert http(verify=value).http_options() == {"verify": expected}


def test_verify_may_name_a_ca_bundle_and_verify_ssl_is_its_alias(pem):
    assert http(verify=pem["ca"]).http_options() == {"verify": pem["ca"]}
    assert http(verify_ssl="false").http_options() == {"verify": False}


def test_a_ca_bundle_that_does_not_exist_is_refused_naming_connection_and_path(tmp_path: Path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match=r"connection 'population_registry': extra 'verify' names .*nope.pem.* does not exist"):
        http(verify=missing).http_options()


def test_cert_is_one_file_or_certificate_and_key(pem):
    assert http(cert=pem["cert"]).http_options() == {"cert": pem["cert"]}
    assert http(cert=[pem["cert"], pem["key"]]).http_options() == {"cert": (pem["cert"], pem["key"])}
    assert http(cert=json.dumps([pem["cert"], pem["key"]])).http_options() == {"cert": (pem["cert"], pem["key"])}
    with pytest.raises(ValueError, match=r"extra 'cert'.*\[certificate, key\]"):
        http(cert=[pem["cert"]]).http_options()


def test_proxies_as_a_map_a_json_text_or_one_url_and_proxy_is_its_alias():
    mapping = {"https": "http://proxy.example:3128"}
    assert http(proxies=mapping).http_options() == {"proxies": mapping}
    assert http(proxies=json.dumps(mapping)).http_options() == {"proxies": mapping}
    assert http(proxy="http://proxy.example:3128").http_options() == {
        "proxies": {"http": "http://proxy.example:3128", "https": "http://proxy.example:3128"}}


def test_a_bad_proxies_extra_is_refused_without_showing_it():
    with pytest.raises(ValueError, match=r"extra 'proxies' \(a list\) is not") as err:
        http(proxies=["http://user:pw@proxy"]).http_options()
    assert "pw@" not in str(err.value)


@pytest.mark.parametrize("value, expected", [(10, 10.0), ("12.5", 12.5), ([3, 60], (3.0, 60.0)), ("[3, 60]", (3.0, 60.0))])
def test_timeout_is_seconds_or_connect_and_read(value, expected):
    assert http(timeout=value).http_options() == {"timeout": expected}


@pytest.mark.parametrize("value", ["soon", 0, -1, [1, 2, 3], True, "[1,"])
def test_a_bad_timeout_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=r"connection 'population_registry': extra 'timeout'"):
        http(timeout=value).http_options()


def test_the_uri_form_carries_http_extras_as_text(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_REGISTRY_T", "http://registry.example:443/https?verify=false&timeout=12")
    assert get_connection("business_registry_t").http_options() == {"verify": False, "timeout": 12.0}
