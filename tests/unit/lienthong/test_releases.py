"""Signed releases (`lienthong.releases`, `lienthong verify`): a signed version folder verifies offline against
its keyring; one changed byte of a file, one changed manifest field, an added or removed field, a file not in
the manifest, an unknown or revoked key each fail with the name of what changed; rotated keys still verify
old releases; keys are read from PEM or a base64 seed and never shown in an error."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lienthong import cli, releases


def _publish_folder(root: Path, key: releases.SigningKey, *, version: int = 1, rows: int = 5,
                    signed_at: datetime | None = None) -> Path:
    """A version folder as `publish` writes it: one Parquet part and a signed manifest; the key in the keyring."""
    folder = root / "citizen_profile" / f"v{version:06d}"
    folder.mkdir(parents=True)
    part = folder / "part-00000.parquet"
    pq.write_table(pa.table({"personal_id": [f"0010{i:08d}" for i in range(rows)], "n": list(range(rows))}), part)
    manifest = {"dataset": "citizen_profile", "version": version, "contract_version": "1.2.0", "row_count": rows,
                "published_at": datetime(2026, 12, 1, tzinfo=UTC), "quality": {"gate_passed": True,
                                                                              "failed_critical": []},
                "model_versions": {"holder_citizen": {"model_id": "m1", "sha256": "ab" * 32}},
                "masking_policy": {"agencies": {"tax_department": {"columns": {"personal_id": "masked"}}}},
                "files": [{"path": part.name, "rows": rows, "sha256": releases.sha256_file(part),
                           "bytes": part.stat().st_size}]}
    signed = releases.sign(manifest, key, signed_at=signed_at)
    (folder / releases.MANIFEST).write_text(json.dumps(signed, indent=2, ensure_ascii=False), encoding="utf-8")
    releases.add_to_keyring(releases.keyring_dir(root), key)
    return folder


def _key() -> releases.SigningKey:
    return releases.new_key()[1]


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / releases.MANIFEST
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")


def _what(result: releases.Verification) -> set[str]:
    return {p.what for p in result.problems}


def test_a_signed_release_verifies_offline(tmp_path):
    key = _key()
    folder = _publish_folder(tmp_path, key)
    result = releases.verify(folder)
    assert result.ok, result.problems
    assert (result.dataset, result.version, result.key_id, result.files, result.rows) == (
        "citizen_profile", 1, key.key_id, 1, 5)
    assert result.keyring == tmp_path / "_keys"
    assert releases.verify(folder / releases.MANIFEST).ok  # the manifest file itself names the same release
    signature = json.loads((folder / releases.MANIFEST).read_text())["signature"]
    assert signature["algorithm"] == "Ed25519" and datetime.fromisoformat(signature["signed_at"]).tzinfo
    assert set(signature["fields"]) == {"dataset", "version", "contract_version", "row_count", "published_at",
                                        "quality", "model_versions", "masking_policy", "files"}


def test_one_changed_byte_of_a_file_is_named(tmp_path):
    folder = _publish_folder(tmp_path, _key())
    part = folder / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    result = releases.verify(folder)
    assert not result.ok
    assert [str(p) for p in result.problems if p.what == "file part-00000.parquet"][0].endswith(
        "SHA-256 differs from the manifest's (the file was changed)")
    assert "signature" not in _what(result)  # the manifest itself is intact


@pytest.mark.parametrize(("field", "edit"), [
    ("row_count", lambda d: d.__setitem__("row_count", 6)),
    ("quality", lambda d: d["quality"].__setitem__("gate_passed", False)),
    ("masking_policy", lambda d: d["masking_policy"]["agencies"]["tax_department"]["columns"].__setitem__(
        "personal_id", "visible")),
    ("model_versions", lambda d: d["model_versions"]["holder_citizen"].__setitem__("model_id", "m2")),
])
def test_one_changed_manifest_field_is_named(tmp_path, field, edit):
    folder = _publish_folder(tmp_path, _key())
    _edit_manifest(folder, edit)
    result = releases.verify(folder)
    assert f"manifest field {field}" in _what(result)
    assert any(str(p) == f"manifest field {field}: changed after signing" for p in result.problems)
    assert "signature" not in _what(result)  # the signature itself still holds: it is the field that changed


def test_a_field_and_its_digest_changed_together_break_the_signature(tmp_path):
    folder = _publish_folder(tmp_path, _key())

    def forge(doc):
        doc["row_count"] = 6
        doc["signature"]["fields"]["row_count"] = releases.field_digests({"row_count": 6})["row_count"]

    _edit_manifest(folder, forge)
    result = releases.verify(folder)
    assert "signature" in _what(result)
    assert any("does not verify" in p.detail for p in result.problems if p.what == "signature")


def test_added_and_removed_fields_and_unlisted_files_are_named(tmp_path):
    folder = _publish_folder(tmp_path, _key())
    _edit_manifest(folder, lambda d: (d.pop("contract_version"), d.__setitem__("note", "x")))
    (folder / "part-00001.parquet").write_bytes(b"not listed")
    result = releases.verify(folder)
    assert {str(p) for p in result.problems} >= {
        "manifest field contract_version: removed after signing", "manifest field note: added after signing",
        "file part-00001.parquet: in the folder but not in the manifest"}


def test_a_file_entry_cannot_point_outside_the_folder(tmp_path):
    folder = _publish_folder(tmp_path, _key())
    _edit_manifest(folder, lambda d: d["files"][0].__setitem__("path", "../../_keys/x.json"))
    assert "file '../../_keys/x.json'" in _what(releases.verify(folder))


def test_unsigned_and_unknown_key_are_refused(tmp_path):
    folder = _publish_folder(tmp_path, _key())
    other = tmp_path / "other-keys"
    releases.add_to_keyring(other, _key())
    result = releases.verify(folder, keyring=other)
    assert any("is not in the keyring" in p.detail for p in result.problems)
    _edit_manifest(folder, lambda d: d.pop("signature"))
    assert [str(p) for p in releases.verify(folder).problems if p.what == "signature"] == [
        "signature: the manifest is not signed"]


def test_rotated_keys_keep_old_releases_verifiable(tmp_path):
    old, new = _key(), _key()
    v1 = _publish_folder(tmp_path, old, version=1)
    v2 = _publish_folder(tmp_path, new, version=2)
    assert releases.verify(v1).ok and releases.verify(v2).ok
    assert releases.verify(v1).key_id == old.key_id != releases.verify(v2).key_id
    # an agency whose keyring holds only the new key cannot verify the old release, and is told which key
    only_new = tmp_path / "only-new"
    releases.add_to_keyring(only_new, new)
    problems = releases.verify(v1, keyring=only_new).problems
    assert [p.what for p in problems] == ["signature"] and old.key_id in problems[0].detail


def test_a_revoked_key_fails_releases_signed_after_its_revocation(tmp_path):
    key = _key()
    before = _publish_folder(tmp_path, key, version=1, signed_at=datetime(2026, 1, 1, tzinfo=UTC))
    after = _publish_folder(tmp_path, key, version=2, signed_at=datetime(2026, 3, 1, tzinfo=UTC))
    entry = next((tmp_path / "_keys").glob("*.json"))
    record = json.loads(entry.read_text())
    record["revoked_at"] = (datetime(2026, 3, 1, tzinfo=UTC) - timedelta(days=1)).isoformat()
    entry.write_text(json.dumps(record))
    assert releases.verify(before).ok
    assert any("was revoked" in p.detail for p in releases.verify(after).problems)


def test_a_keyring_entry_must_match_its_key_id(tmp_path):
    key, other = _key(), _key()
    (tmp_path / "k.json").write_text(json.dumps({**key.public_record(), "key_id": other.key_id}))
    with pytest.raises(ValueError, match="does not belong to its public key"):
        releases.load_keyring(tmp_path)


def test_private_keys_from_pem_or_seed_and_errors_without_the_value(monkeypatch):
    pem, key = releases.new_key()
    assert releases.parse_private_key(pem, "x").key_id == key.key_id
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    seed = base64.b64encode(key.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
    monkeypatch.setenv(releases.SIGNING_KEY_ENV, seed)
    assert releases.signing_key().key_id == key.key_id
    bad = base64.b64encode(b"0123456789").decode()
    monkeypatch.setenv(releases.SIGNING_KEY_ENV, bad)
    with pytest.raises(releases.SigningKeyError) as err:
        releases.signing_key()
    assert releases.SIGNING_KEY_ENV in str(err.value) and bad not in str(err.value)


def test_no_key_configured_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(releases.SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_" + releases.SIGNING_CONN_ID.upper(), raising=False)
    with pytest.raises(releases.SigningKeyError, match="no release signing key"):
        releases.signing_key()
    # the connection's password is the other place the key can come from
    pem, key = releases.new_key()
    monkeypatch.setenv("AIRFLOW_CONN_" + releases.SIGNING_CONN_ID.upper(),
                       json.dumps({"conn_type": "generic", "password": pem}))
    assert releases.signing_key().key_id == key.key_id


def test_cli_verify_and_release_key(tmp_path, capsys, monkeypatch):
    private = tmp_path / "signing.pem"
    assert cli.main(["release-key", "new", "--private-out", str(private), "--keyring", str(tmp_path / "ring")]) == 0
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    out = capsys.readouterr().out
    assert "BEGIN" not in out  # the private key is never printed
    with pytest.raises(FileExistsError):  # never over an existing key
        cli.main(["release-key", "new", "--private-out", str(private)])
    monkeypatch.setenv(releases.SIGNING_KEY_ENV, private.read_text())
    key = releases.signing_key()
    assert cli.main(["release-key", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["key_id"] == key.key_id
    assert [p.name for p in (tmp_path / "ring").iterdir()] == [key.key_id.replace(":", "-") + ".json"]

    folder = _publish_folder(tmp_path / "published", key)
    assert cli.main(["verify", str(folder)]) == 0
    assert capsys.readouterr().out.startswith(f"OK  citizen_profile v1: signed by {key.key_id}")
    _edit_manifest(folder, lambda d: d.__setitem__("row_count", 4))
    assert cli.main(["verify", str(folder), "--keyring", str(tmp_path / "ring")]) == 1
    out = capsys.readouterr().out
    assert "manifest field row_count: changed after signing" in out
    assert "manifest field row_count: 4, the files hold 5 rows" in out
    assert cli.main(["verify", "--json", str(folder)]) == 1
    assert json.loads(capsys.readouterr().out)[0]["ok"] is False
