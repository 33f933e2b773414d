"""Signed releases: the Ed25519 signature on a published version's manifest, the keyring of public keys that
verifies it, and the offline check of a version folder (`lienthong verify`).

What is signed. The manifest (file hashes and sizes, row counts, contract version, quality verdict, link model
versions, masking policy, lineage) gets a `signature` block:

    {"algorithm": "Ed25519", "key_id": "ed25519:<16 hex>", "signed_at": <UTC ISO time>,
     "fields": {<top-level manifest field>: <SHA-256 of its canonical JSON>, ...}, "value": <base64 signature>}

The signature covers the canonical JSON (sorted keys, no spaces, UTF-8) of the block without `value`. Signing
the field digests rather than the manifest's bytes lets `verify` name the field that changed after signing
(a digest that no longer matches), not only say that something did; the digests are themselves signed, so
changing a field and its digest breaks the signature. The files are bound through the `files` field (each
file's SHA-256, bytes and rows).

Keys. The private key comes from the environment (`LIENTHONG_RELEASE_SIGNING_KEY`) or the password of Airflow
connection `lienthong_release_signing`: an Ed25519 key as PEM (PKCS#8) or as the base64 of its 32-byte seed
(`lienthong release-key new` makes one). Its key id is derived from the public key, so a key cannot be given
under another's id. Publishing adds the public key to the keyring `<published_dir>/_keys/<key id>.json`;
agencies take a copy of the keyring through a channel they trust and verify against it (`--keyring`).
Rotation: configure a new key; the next release is signed with it and its public key joins the keyring;
old releases keep naming the old key id and still verify as long as the keyring holds that key. A key known
to be compromised is marked `"revoked_at"` in its keyring file: releases it signed after that time fail.

The timestamp is the signer's clock (`signed_at`, inside what is signed); no time-stamping authority is
reachable from these machines, so it proves when the publisher says it signed, not more.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lienthong import snapshots
from lienthong.settings import passed_env

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_KEY_ENV = "LIENTHONG_RELEASE_SIGNING_KEY"
SIGNING_CONN_ID = "lienthong_release_signing"
ALGORITHM = "Ed25519"
KEYRING_DIR = "_keys"
MANIFEST = snapshots.MANIFEST
SIGNATURE = "signature"


class SigningKeyError(RuntimeError):
    """No usable signing key: publishing refuses rather than release an unsigned version."""


def canonical(value: Any) -> bytes:
    """The bytes a digest or signature is taken over: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def as_json(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it reads back from its file (dates as text, tuples as lists), which is what is signed."""
    loaded: dict[str, Any] = json.loads(json.dumps(manifest, default=str, ensure_ascii=False))
    return loaded


def field_digests(manifest: dict[str, Any]) -> dict[str, str]:
    return {k: hashlib.sha256(canonical(v)).hexdigest() for k, v in manifest.items() if k != SIGNATURE}


def _raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    """`ed25519:` and the first 16 hex digits of the SHA-256 of the raw public key."""
    return "ed25519:" + hashlib.sha256(_raw_public(public)).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id_of(self.private.public_key())

    def public_record(self) -> dict[str, Any]:
        """The keyring entry of this key (no secret in it)."""
        return {"key_id": self.key_id, "algorithm": ALGORITHM,
                "public_key": base64.b64encode(_raw_public(self.private.public_key())).decode("ascii")}


def parse_private_key(text: str, source: str) -> SigningKey:
    """An Ed25519 private key from PEM (PKCS#8, unencrypted) or the base64 of its 32-byte seed. The error names
    `source` (where the key came from), never the value."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_private_key(text.encode("ascii"), password=None)
        else:
            seed = base64.b64decode(text, validate=True)
            if len(seed) != 32:
                raise ValueError(f"{len(seed)} bytes, not 32")
            key = Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{source}: not an Ed25519 private key (PEM, or the base64 of a 32-byte seed): "
                              f"{type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{source}: a {type(key).__name__}, not an Ed25519 private key")
    return SigningKey(key)


def signing_key() -> SigningKey:
    """The configured signing key: env `LIENTHONG_RELEASE_SIGNING_KEY`, else the password of connection
    `lienthong_release_signing`. Missing is an error that says how to set one."""
    value = passed_env(SIGNING_KEY_ENV)
    if value:
        return parse_private_key(value, SIGNING_KEY_ENV)
    try:
        from lienthong.connections import get_connection

        password = get_connection(SIGNING_CONN_ID).password
    except LookupError:
        password = None
    if not password:
        raise SigningKeyError(f"no release signing key: set {SIGNING_KEY_ENV} (or the password of connection "
                              f"{SIGNING_CONN_ID!r}) to an Ed25519 key; `lienthong release-key new` makes one")
    return parse_private_key(password, f"connection {SIGNING_CONN_ID!r}")


def new_key() -> tuple[str, SigningKey]:
    """A new key: (its private key as PEM, the key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode("ascii")
    return pem, SigningKey(private)


def sign(manifest: dict[str, Any], key: SigningKey, *, signed_at: datetime | None = None) -> dict[str, Any]:
    """The manifest (as it reads back from JSON) with its `signature` block."""
    body = as_json({k: v for k, v in manifest.items() if k != SIGNATURE})
    block = {"algorithm": ALGORITHM, "key_id": key.key_id,
             "signed_at": (signed_at or datetime.now(UTC)).isoformat(), "fields": field_digests(body)}
    block["value"] = base64.b64encode(key.private.sign(canonical(block))).decode("ascii")
    return {**body, SIGNATURE: block}


# --- keyring ----------------------------------------------------------------------------------------------------


def keyring_dir(published_dir: Path) -> Path:
    return Path(published_dir) / KEYRING_DIR


def add_to_keyring(directory: Path, key: SigningKey) -> Path:
    """Write the key's public entry as `<directory>/<key id>.json` if it is not there (atomic; first use kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (key.key_id.replace(":", "-") + ".json")
    if not path.exists():
        record = {**key.public_record(), "added_at": datetime.now(UTC).isoformat()}
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    key: Ed25519PublicKey = field(repr=False)
    revoked_at: datetime | None = None
    source: str = ""


def _public_entry(record: Any, source: str) -> PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM or "public_key" not in record:
        raise ValueError(f"{source}: not an {ALGORITHM} keyring entry (algorithm, key_id, public_key)")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(record["public_key"], validate=True))
    except ValueError as exc:
        raise ValueError(f"{source}: public_key is not a base64 Ed25519 public key ({exc})") from None
    key_id = key_id_of(public)
    if record.get("key_id") not in (None, key_id):
        raise ValueError(f"{source}: key_id {record.get('key_id')!r} does not belong to its public key ({key_id})")
    revoked = record.get("revoked_at")
    return PublicKey(key_id, public, datetime.fromisoformat(revoked) if revoked else None, source)


def load_keyring(path: Path) -> dict[str, PublicKey]:
    """Public keys by key id: a folder of `*.json` entries, or one file holding an entry or a list of them."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"keyring {path}: no public key there")
    keys: dict[str, PublicKey] = {}
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        for i, record in enumerate(doc if isinstance(doc, list) else [doc]):
            entry = _public_entry(record, f"{f}" + (f"[{i}]" if isinstance(doc, list) else ""))
            keys[entry.key_id] = entry
    return keys


# --- verification -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    what: str  # what does not match: "signature", "manifest field row_count", "file part-00000.parquet", ...
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


@dataclass
class Verification:
    manifest: Path
    keyring: Path
    dataset: str | None = None
    version: int | None = None
    key_id: str | None = None
    signed_at: str | None = None
    files: int = 0
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"manifest": str(self.manifest), "keyring": str(self.keyring), "dataset": self.dataset,
                "version": self.version, "key_id": self.key_id, "signed_at": self.signed_at, "files": self.files,
                "rows": self.rows, "ok": self.ok, "problems": [str(p) for p in self.problems]}


def _signature_problems(manifest: dict[str, Any], keys: dict[str, PublicKey], out: Verification) -> None:
    from cryptography.exceptions import InvalidSignature

    block = manifest.get(SIGNATURE)
    if not isinstance(block, dict):
        out.problems.append(Problem("signature", "the manifest is not signed"))
        return
    out.key_id, out.signed_at = block.get("key_id"), block.get("signed_at")
    if block.get("algorithm") != ALGORITHM:
        out.problems.append(Problem("signature", f"algorithm {block.get('algorithm')!r}, not {ALGORITHM}"))
        return
    key = keys.get(str(out.key_id))
    if key is None:
        out.problems.append(Problem("signature", f"key {out.key_id!r} is not in the keyring {out.keyring}"))
        return
    try:
        value = base64.b64decode(str(block.get("value", "")), validate=True)
        key.key.verify(value, canonical({k: v for k, v in block.items() if k != "value"}))
    except (InvalidSignature, ValueError):
        out.problems.append(Problem("signature", f"does not verify with key {out.key_id}: the signature block "
                                                 "(its time, key id or field digests) was altered"))
    try:
        signed_at = datetime.fromisoformat(str(out.signed_at))
    except ValueError:
        out.problems.append(Problem("signature", f"signed_at {out.signed_at!r} is not a time"))
    else:
        if key.revoked_at is not None and signed_at >= key.revoked_at:
            out.problems.append(Problem("signature", f"key {out.key_id} was revoked at {key.revoked_at.isoformat()}, "
                                                     f"before this signature ({out.signed_at})"))
    fields = block.get("fields")
    signed: dict[str, Any] = fields if isinstance(fields, dict) else {}
    now = field_digests(manifest)
    for name in sorted(set(signed) | set(now)):
        if name not in now:
            out.problems.append(Problem(f"manifest field {name}", "removed after signing"))
        elif name not in signed:
            out.problems.append(Problem(f"manifest field {name}", "added after signing"))
        elif signed[name] != now[name]:
            out.problems.append(Problem(f"manifest field {name}", "changed after signing"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_problems(folder: Path, manifest: dict[str, Any], out: Verification) -> None:
    import pyarrow.parquet as pq

    entries = manifest.get("files")
    if not isinstance(entries, list):
        out.problems.append(Problem("manifest field files", "missing or not a list"))
        return
    listed: set[str] = set()
    for entry in entries:
        name = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        path = (folder / name).resolve()
        if not name or path.parent != folder.resolve():
            out.problems.append(Problem(f"file {name!r}", "not a file name inside the version folder"))
            continue
        listed.add(name)
        what = f"file {name}"
        if not path.is_file():
            out.problems.append(Problem(what, "missing"))
            continue
        out.files += 1
        if path.stat().st_size != entry.get("bytes"):
            out.problems.append(Problem(what, f"{path.stat().st_size} bytes, the manifest says {entry.get('bytes')}"))
        if sha256_file(path) != entry.get("sha256"):
            out.problems.append(Problem(what, "SHA-256 differs from the manifest's (the file was changed)"))
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # a damaged file is reported, never raised past the other checks
            out.problems.append(Problem(what, f"not readable as Parquet ({type(exc).__name__})"))
            continue
        out.rows += rows
        if rows != entry.get("rows"):
            out.problems.append(Problem(what, f"{rows} rows, the manifest says {entry.get('rows')}"))
    for extra in sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        if extra not in listed:
            out.problems.append(Problem(f"file {extra}", "in the folder but not in the manifest"))
    if snapshots.form(manifest) == snapshots.SNAPSHOT:
        if out.rows != manifest.get("row_count"):
            out.problems.append(Problem("manifest field row_count",
                                        f"{manifest.get('row_count')}, the files hold {out.rows} rows"))
        return
    # a delta: its files hold the change the manifest counts; the version's rows are checked over its chain
    counts = (manifest.get("changes") or {}).get("rows") or {}
    expected = {"new_images": counts.get("insert", 0) + counts.get("update_postimage", 0),
                "removed_keys": counts.get("delete", 0) + counts.get("update_preimage", 0)}
    for entry in entries:
        role = entry.get("role") if isinstance(entry, dict) else None
        if role in expected and entry.get("rows") != expected[role]:
            out.problems.append(Problem(f"file {entry.get('path')}", f"{entry.get('rows')} {role} rows, the "
                                        f"manifest's changes say {expected[role]}"))


def verify(target: str | Path, keyring: str | Path | None = None, *, chain: bool = True) -> Verification:
    """Check a version offline: `target` is its folder or its `_manifest.json`; `keyring` a folder of public
    key entries or one file (default: `_keys` beside the dataset folders, i.e. `<target>/../../_keys`). Every
    mismatch is listed with what it concerns; nothing is raised for a bad release. A delta version
    (`lienthong.snapshots`) is checked with its chain: the base snapshot and the deltas before it verify too,
    and together they give the manifest's row count (`chain=False`: the folder alone)."""
    target = Path(target)
    manifest_path = target / MANIFEST if target.is_dir() else target
    folder = manifest_path.parent
    ring = Path(keyring) if keyring is not None else folder.parent.parent / KEYRING_DIR
    out = Verification(manifest_path, ring)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        out.problems.append(Problem("manifest", f"not readable as JSON ({type(exc).__name__}: {exc})"))
        return out
    if not isinstance(manifest, dict):
        out.problems.append(Problem("manifest", "not a JSON object"))
        return out
    out.dataset, out.version = manifest.get("dataset"), manifest.get("version")
    try:
        keys = load_keyring(ring)
    except (OSError, ValueError) as exc:
        out.problems.append(Problem("keyring", str(exc)))
        keys = {}
    _signature_problems(manifest, keys, out)
    _file_problems(folder, manifest, out)
    if chain and snapshots.form(manifest) == snapshots.DELTA:
        _chain_problems(folder, manifest, ring, out)
    return out


def _chain_problems(folder: Path, manifest: dict[str, Any], ring: Path, out: Verification) -> None:
    """A delta version is its base snapshot and the deltas up to it: each of those folders must verify too,
    and the rows they give must be the manifest's row count."""
    ds_dir, version = folder.parent, int(manifest["version"])
    chain = snapshots.chain_of(manifest)
    for v in range(chain["base_version"], version):
        place = snapshots.folder_of(ds_dir, v)
        earlier = verify(place, ring, chain=False) if place.is_dir() else None
        if earlier is None:
            out.problems.append(Problem(f"chain v{v:06d}", "missing: the version is built on it"))
            return
        out.problems += [Problem(f"chain v{v:06d}: {p.what}", p.detail) for p in earlier.problems]
    if out.problems:
        return
    try:
        rows = snapshots.read_version(ds_dir, version, list(manifest.get("key") or []))
    except Exception as exc:  # reported, never raised: a release that cannot be read is a finding
        out.problems.append(Problem("chain", f"cannot be read back ({type(exc).__name__}: {exc})"))
        return
    out.rows = rows.num_rows
    if rows.num_rows != manifest.get("row_count"):
        out.problems.append(Problem("manifest field row_count",
                                    f"{manifest.get('row_count')}, the chain gives {rows.num_rows} rows"))
