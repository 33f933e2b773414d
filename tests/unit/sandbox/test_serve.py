"""`python -m sandbox.serve` without starting anything: credentials given by the environment, and where it
listens and which host it hands out."""

from __future__ import annotations

import socket

import pytest

from sandbox.runner import Listen
from sandbox.serve import DEFAULT_CLIENT_ID, build_parser, credentials_from_env

SECRETS = {"SANDBOX_CLIENT_SECRET": "s", "SANDBOX_API_KEY": "k", "SANDBOX_LAND_PASSWORD": "p"}


def test_no_credentials_in_the_environment_means_fresh_ones_per_start():
    assert credentials_from_env({}) is None


def test_credentials_from_the_environment_are_used_as_given():
    given = credentials_from_env({**SECRETS, "SANDBOX_CLIENT_ID": "platform"})
    assert given is not None
    assert (given.client_id, given.client_secret, given.api_key, given.land_password) == (
        "platform",
        "s",
        "k",
        "p",
    )
    assert credentials_from_env(SECRETS).client_id == DEFAULT_CLIENT_ID  # type: ignore[union-attr]


def test_half_given_credentials_are_refused_naming_what_is_missing():
    with pytest.raises(ValueError, match="SANDBOX_API_KEY, SANDBOX_LAND_PASSWORD"):
        credentials_from_env({"SANDBOX_CLIENT_SECRET": "s"})


def test_secrets_never_print_in_the_credentials_repr():
    given = credentials_from_env(
        {"SANDBOX_CLIENT_SECRET": "secret-1", "SANDBOX_API_KEY": "key-1", "SANDBOX_LAND_PASSWORD": "pw-1"}
    )
    assert not {"secret-1", "key-1", "pw-1"} & set(repr(given).replace("'", " ").split())


def test_by_default_it_listens_on_loopback_with_land_on_its_socket_only():
    args = build_parser().parse_args(["--data", "d", "--state", "s"])
    assert (args.host, args.population_port, args.business_port, args.land_port) == ("127.0.0.1", 0, 0, None)
    assert Listen().advertised == "127.0.0.1"


def test_a_wildcard_bind_advertises_the_given_name_or_this_machines():
    assert Listen(host="0.0.0.0", advertise="sandbox").advertised == "sandbox"
    assert Listen(host="0.0.0.0").advertised == socket.getfqdn()
