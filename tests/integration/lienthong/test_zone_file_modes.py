"""Nothing the platform writes under the data dir is readable by anyone but its owner, even when the process
runs with an Airflow worker's umask 022: a small province is landed by the real connectors, then staged,
validated (Great Expectations stores and Data Docs), reconciled, published and reported, and every folder
and file of the data dir (the embedded warehouse's included) is checked for group and other bits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STAGED = ("citizen", "enterprise", "legal_representative", "parcel", "land_holder", "certificate")
PUBLISHED = ("citizen_profile", "enterprise_profile", "parcel_register", "reconciliation_findings", "quality_summary")


def _loose(data_dir: Path, root_mode: int) -> list[str]:
    """Every folder and regular file under `data_dir` with a group or other bit, as `path mode owner`.
    Sockets are left out: the embedded server's socket lives in its 0700 data dir, with PostgreSQL's mode."""
    st = data_dir.stat()
    found = [] if stat.S_IMODE(st.st_mode) == root_mode else [f"{data_dir} {stat.S_IMODE(st.st_mode):o} (root)"]
    for folder, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            if (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) and st.st_mode & 0o077:
                found.append(f"{path} {stat.S_IMODE(st.st_mode):o} uid={st.st_uid}")
    return found


def test_a_whole_pipeline_run_under_umask_022_leaves_nothing_readable_by_group_or_others(tmp_path_factory):
    from province import ingested_province

    from lienthong import pipeline
    from lienthong.audit.render import build_report
    from lienthong.private_files import root_mode
    from lienthong.settings import load_settings

    root = tmp_path_factory.mktemp("private")
    old = os.umask(0o022)
    try:
        with ingested_province(root, citizens=300, seed=7, run_id="ingest-1") as prov:
            for name in STAGED:
                summary = pipeline.stage(name, "run-1")
                pipeline.validate(name, "run-1", summary)
            pipeline.reconcile("run-1")
            for name in PUBLISHED:
                pipeline.publish(name, "publish-run-1")
            report = build_report("run-1", publish_run_id="publish-run-1")
            settings = load_settings()
            data_dir = prov["data_dir"]
            zones = {p.name for p in data_dir.iterdir()}
            expected_root = root_mode(settings)
            loose = _loose(data_dir, expected_root)
    finally:
        os.umask(old)
    # the run wrote every zone (so the walk below covered each writer)
    assert {"raw", "staged", "quarantine", "integrated", "published", "reports", "warehouse-pg"} <= zones, zones
    assert Path(report["html"]).is_file()
    assert (settings.reports_dir / "data_docs" / "index.html").is_file()
    # 0700, or 0711 when root runs the platform and the embedded warehouse belongs to its own system user
    assert expected_root == (0o711 if (data_dir / "warehouse-pg").stat().st_uid != os.geteuid() else 0o700)
    assert not loose, "readable by group or others:\n" + "\n".join(loose)
