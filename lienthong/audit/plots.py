"""The report's plots, drawn with matplotlib into inline SVG text (the report must open offline: no
scripts, no CDN, no image files beside it).

Each function takes the plain figures of `lienthong.audit.collect` and returns one `<svg>` element; the run
the report is about is drawn highlighted.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display here, and none needed
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller files, searchable, rendered with the page's fonts
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
CURRENT = "#d62728"


def _svg(fig: Any, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Title": title, "Date": None})
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # The title as the SVG's accessible name (screen readers, and tests finding the plot by its title).
    return svg.replace("<svg", f'<svg role="img" aria-label="{title}"', 1)


def _labels(trends: list[dict[str, Any]]) -> list[str]:
    out = []
    for t in trends:
        try:
            out.append(datetime.fromisoformat(t["started_at"]).strftime("%m-%d\n%H:%M:%S"))
        except (TypeError, ValueError):
            out.append(t["run_id"][-8:])
    return out


def _mark_current(ax: Any, trends: list[dict[str, Any]], run_id: str) -> None:
    for i, t in enumerate(trends):
        if t["run_id"] == run_id:
            ax.axvline(i, color=CURRENT, linewidth=1, linestyle="--", alpha=0.7, label="this run")


def quality_trend(trends: list[dict[str, Any]], run_id: str) -> str:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 2.8))
        x = range(len(trends))
        for key, label in (("quality_pass_rate", "expectations passed"), ("record_pass_rate", "records staged / in")):
            ys = [100 * t[key] if t[key] is not None else float("nan") for t in trends]
            ax.plot(x, ys, marker="o", label=label)
        _mark_current(ax, trends, run_id)
        ax.set_xticks(list(x), _labels(trends))
        ax.set_ylabel("%")
        ax.set_title("Quality pass rate per run")
        ax.legend(loc="lower left", fontsize=8)
        return _svg(fig, "Quality pass rate per run")


def findings_trend(trends: list[dict[str, Any]], run_id: str) -> str:
    types = sorted({k for t in trends for k in t["open_by_type"]})
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        x = list(range(len(trends)))
        bottom = [0] * len(trends)
        cmap = plt.get_cmap("tab20")
        for i, typ in enumerate(types):
            ys = [t["open_by_type"].get(typ, 0) for t in trends]
            ax.bar(x, ys, bottom=bottom, label=typ, color=cmap(i % 20), width=0.7)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        _mark_current(ax, trends, run_id)
        ax.set_xticks(x, _labels(trends))
        ax.set_ylabel("open findings")
        ax.set_title("Open findings by type after each run")
        if types:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        return _svg(fig, "Open findings by type after each run")


def rows_trend(trends: list[dict[str, Any]], run_id: str) -> str:
    zones = (("rows_raw", "raw"), ("rows_staged", "staged"), ("rows_quarantined", "quarantined"),
             ("rows_integrated", "integrated"), ("rows_published", "published"))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 2.8))
        x = range(len(trends))
        for key, label in zones:
            ys = [t[key] if t[key] else float("nan") for t in trends]
            ax.plot(x, ys, marker="o", label=label)
        _mark_current(ax, trends, run_id)
        ax.set_yscale("log")
        ax.set_xticks(list(x), _labels(trends))
        ax.set_ylabel("rows (log)")
        ax.set_title("Rows per zone per run")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        return _svg(fig, "Rows per zone per run")


def duration_trend(trends: list[dict[str, Any]], run_id: str) -> str:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 2.4))
        x = list(range(len(trends)))
        colors = [CURRENT if t["run_id"] == run_id else "#1f77b4" for t in trends]
        ax.bar(x, [t["duration_seconds"] for t in trends], color=colors, width=0.7)
        ax.set_xticks(x, _labels(trends))
        ax.set_ylabel("seconds")
        ax.set_title("Run duration (staging start to reconciliation end)")
        return _svg(fig, "Run duration per run")


def quarantine_reasons(quarantine: list[dict[str, Any]]) -> str | None:
    if not quarantine:
        return None
    rows = sorted(quarantine, key=lambda r: r["rows"])[-15:]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.28 * len(rows)))
        ax.barh([f"{r['dataset']}: {r['reason']}" for r in rows], [r["rows"] for r in rows], color="#ff7f0e")
        ax.set_xlabel("records quarantined")
        ax.set_title("Quarantine by reason (this run)")
        return _svg(fig, "Quarantine by reason")


EVENT_COLORS = {"created": "#2ca02c", "continued": "#17becf", "split": "#ff7f0e", "merged": "#9467bd",
                "retired": "#7f7f7f"}
LINK_COLORS = {"new": "#2ca02c", "changed": "#ff7f0e", "removed": "#d62728"}


def _stacked(ax: Any, rows: list[dict[str, Any]], series: dict[str, list[int | None]], colors: dict[str, str],
             missing: list[str | None]) -> None:
    """Stacked bars on a symlog axis (a first run creates thousands of entities, a change run a handful: both
    stay readable), each bar's total written above it, and `missing[i]` written where run i has no bar."""
    x = list(range(len(rows)))
    bottom = [0] * len(rows)
    for name, ys in series.items():
        heights = [y or 0 for y in ys]
        ax.bar(x, heights, bottom=bottom, label=name, color=colors[name], width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, max([*bottom, 1]) * 4)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for i, (total, note) in enumerate(zip(bottom, missing, strict=True)):
        ax.annotate(note if note else f"{total:,}", (i, max(total, 0)), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=7, color="#57606a" if note else "#1f2328",
                    rotation=90 if note else 0, va="bottom")


def _not_recorded(row: dict[str, Any]) -> str:
    status = row["reconcile_status"]
    return "not reconciled" if status is None else ("not recorded" if status == "success" else f"reconcile {status}")


def entity_events(rows: list[dict[str, Any]], run_id: str) -> str | None:
    """Entity events per run, stacked by event (all kinds together; the table splits them by kind)."""
    if not rows:
        return None
    from lienthong.entities import EVENTS

    series = {e: [r["event_totals"][e] if r["event_totals"] else None for r in rows] for e in EVENTS}
    missing = [None if r["entities_recorded"] else _not_recorded(r) for r in rows]
    return _stacked_per_run(rows, run_id, series, EVENT_COLORS, missing, "entities (symlog)", "Entity events per run")


def links_changed(rows: list[dict[str, Any]], run_id: str) -> str | None:
    """Person links a run moved (new, changed, removed), stacked; a full relink is labelled, not counted."""
    if not rows:
        return None
    series = {k: [r["links"][k] for r in rows] for k in LINK_COLORS}
    missing = [None if r["link_state_recorded"] and r["mode"] != "full" else
               ("full relink" if r["mode"] == "full" else _not_recorded(r)) for r in rows]
    return _stacked_per_run(rows, run_id, series, LINK_COLORS, missing, "links (symlog)",
                            "Person links changed per run")


def _stacked_per_run(rows: list[dict[str, Any]], run_id: str, series: dict[str, list[int | None]], colors: dict[str, str],
                     missing: list[str | None], ylabel: str, title: str) -> str:
    """One stacked bar per run (`_stacked`), the report's run marked, legend beside: the entity plots' frame."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.0))
        _stacked(ax, rows, series, colors, missing)
        _mark_current(ax, rows, run_id)
        ax.set_xticks(list(range(len(rows))), _labels(rows))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        return _svg(fig, title)


OVERDUE = "#d62728"
WITHIN = "#1f77b4"


def case_ageing(buckets: list[dict[str, Any]]) -> str | None:
    """Open findings per responsible agency and age bucket, the overdue part of each bar highlighted."""
    if not buckets or not any(b["open"] for b in buckets):
        return None
    agencies = list(dict.fromkeys(b["agency"] for b in buckets))
    labels = list(dict.fromkeys(b["bucket"] for b in buckets))
    width = 0.8 / max(1, len(agencies))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.0))
        hatches = ("", "//", "..", "xx")
        for i, agency in enumerate(agencies):
            mine = {b["bucket"]: b for b in buckets if b["agency"] == agency}
            x = [j + (i - (len(agencies) - 1) / 2) * width for j in range(len(labels))]
            overdue = [mine[lb]["overdue"] if lb in mine else 0 for lb in labels]
            within = [(mine[lb]["open"] if lb in mine else 0) - o for lb, o in zip(labels, overdue, strict=True)]
            hatch = hatches[i % len(hatches)]
            ax.bar(x, within, width=width, color=WITHIN, hatch=hatch, edgecolor="white",
                   label=f"{agency}: within deadline")
            ax.bar(x, overdue, width=width, bottom=within, color=OVERDUE, hatch=hatch, edgecolor="white",
                   label=f"{agency}: overdue")
        ax.set_xticks(list(range(len(labels))), labels)
        ax.set_xlabel("open for")
        ax.set_ylabel("open findings")
        ax.set_title("Open findings by age and responsible agency (overdue in red)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        return _svg(fig, "Open findings by age and responsible agency")


def all_plots(figures: dict[str, Any]) -> dict[str, str | None]:
    trends, run_id = figures["trends"], figures["run_id"]
    entity_rows = figures.get("entity_runs") or []
    return {
        "quality": quality_trend(trends, run_id),
        "findings": findings_trend(trends, run_id),
        "rows": rows_trend(trends, run_id),
        "duration": duration_trend(trends, run_id),
        "quarantine": quarantine_reasons(figures["quarantine"]),
        "entity_events": entity_events(entity_rows, run_id),
        "links_changed": links_changed(entity_rows, run_id),
        "case_ageing": case_ageing(figures.get("case_ageing") or []),
    }
