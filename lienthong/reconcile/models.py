"""Persisted person-link models: trained once, reused by every reconciliation until a retraining replaces them.

Owns where a model's files go and how the ledger names the one in use:

- files: `<integrated>/link_models/model=<link type>-<model id>/` holds `model.json` (Splink's settings and
  parameters, as `linker.misc.save_model_to_json` writes them) and `tf_name.parquet` (the name frequencies
  frozen with it, `people.TF_SCHEMA`); the model id is the content hash (`people.LinkModel.model_id`), so
  the same model is written once;
- ledger: `lienthong_ops.link_model` (through `lienthong.runs`), one `active` row per link type; `save`
  writes the files first (under temporary names, then renamed) and the ledger row after, so a kill leaves
  at worst unreferenced files, never a ledger row without its files.

A daily reconciliation calls `active` and scores with that model; only when a link type has no model yet
does it train one on the whole data and `save` it (`activate=True`). Retraining is the `lienthong
retrain-models` command (`lienthong.reconcile.retrain`), never a side effect of a daily run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lienthong.reconcile.people import TF_SCHEMA, LinkModel

log = logging.getLogger(__name__)

LINK_TYPES = ("representative_citizen", "holder_citizen")
MODELS_DIR = "link_models"
MODEL_FILE = "model.json"
TF_FILE = "tf_name.parquet"


class ModelError(RuntimeError):
    """A persisted model cannot be used (files missing or not the ones the ledger names)."""


def model_dir(integrated_dir: Path, link_type: str, model_id: str) -> Path:
    return Path(integrated_dir) / MODELS_DIR / f"model={link_type}-{model_id}"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in (MODEL_FILE, TF_FILE):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def write(integrated_dir: Path, link_type: str, model: LinkModel) -> tuple[Path, str]:
    """The model's files (once per content); returns (folder, sha256 of the two files)."""
    folder = model_dir(integrated_dir, link_type, model.model_id)
    if not (folder / MODEL_FILE).is_file() or not (folder / TF_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = f".tmp-{os.getpid()}"
        pq.write_table(model.tf.cast(TF_SCHEMA), folder / (TF_FILE + tmp))
        (folder / (MODEL_FILE + tmp)).write_text(json.dumps(model.splink, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(folder / (TF_FILE + tmp), folder / TF_FILE)
        os.replace(folder / (MODEL_FILE + tmp), folder / MODEL_FILE)
    return folder, _digest(folder)


def save(conn: Any, integrated_dir: Path, link_type: str, model: LinkModel, *, run_id: str,
         summary: dict[str, Any] | None = None, activate: bool = True) -> Any:
    """Write the model's files and record it in the ledger (`active`, retiring the type's other active model,
    or `candidate`). The caller commits the connection. Returns the ledger record."""
    from lienthong import runs

    if link_type not in LINK_TYPES:
        raise ValueError(f"unknown link type {link_type!r}: one of {', '.join(LINK_TYPES)}")
    folder, digest = write(integrated_dir, link_type, model)
    record = runs.LinkModelRecord(link_type=link_type, model_id=model.model_id,
                                  status="active" if activate else "candidate", trained_run_id=run_id,
                                  path=str(folder), sha256=digest, summary=summary)
    runs.record_link_model(conn, record)
    log.info("link model %s %s saved (%s) at %s", link_type, model.model_id, record.status, folder)
    return record


def load(record: Any) -> LinkModel:
    """The model a ledger record names, after checking its files are the ones recorded."""
    folder = Path(record.path)
    for name in (MODEL_FILE, TF_FILE):
        if not (folder / name).is_file():
            raise ModelError(f"link model {record.link_type} {record.model_id}: {folder / name} is missing")
    if _digest(folder) != record.sha256:
        raise ModelError(f"link model {record.link_type} {record.model_id}: the files under {folder} are not "
                         "the ones the ledger recorded (sha256 differs)")
    model = LinkModel(splink=json.loads((folder / MODEL_FILE).read_text(encoding="utf-8")),
                      tf=pq.read_table(folder / TF_FILE).cast(TF_SCHEMA))
    if model.model_id != record.model_id:
        raise ModelError(f"link model {record.link_type} {record.model_id}: its files hash to {model.model_id}")
    return model


def active(conn: Any, link_type: str) -> tuple[Any, LinkModel] | None:
    """(ledger record, model) of the active model of `link_type`, or None when none was persisted yet."""
    from lienthong import runs

    record = runs.active_link_model(conn, link_type)
    return (record, load(record)) if record is not None else None
