"""The ``inspect --report`` folder: PNGs plus one self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from .._fs import write_text
from ..store import SAMPLE
from .plots import (
    departing_groups,
    plot_before_after,
    plot_cosine_heatmap,
    plot_distributions,
    plot_norms,
    plot_pca,
    plot_profiles,
)
from .stats import InspectResult, Scan, pca, sample_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What each picture answers (shown under it).
CAPTIONS = {
    "cosine_similarity.png": "do rows with the same label look alike? Blocks along the diagonal"
    " mean they do; lines mark where the ordering label changes.",
    "distributions.png": "the values of the sampled rows, and the variance of each dimension"
    " over every row (dead or extreme dimensions stand out).",
    "pca.png": "the first two principal axes coloured by a label, and how many components hold"
    " 95% of the variance.",
    "profiles.png": "per-dimension mean ± std of the groups whose mean departs most from all"
    " sampled rows (beyond noise) against the black line: where they part, their vectors differ.",
    "l2_norms.png": "the length of every finite row; outliers and several modes show here.",
    "before_after.png": "the same rows before and after normalization; subjects left out of the"
    " statistics are marked with crosses, rows outside the categories list with grey triangles.",
}
#: Values listed per label before "N more".
COUNT_ROWS = 15
#: A label with more values than this is summarised (values, rows per value) above its list.
LARGE_LABEL = 50

# Marks the page as loaded only once every image decoded (checked by the headless-browser test).
_LOAD_CHECK = """<script>
window.addEventListener("error", e => { document.documentElement.dataset.errors = (e.message || "error"); });
window.addEventListener("load", () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.documentElement.dataset.images = document.images.length;
  document.documentElement.dataset.loaded = bad === 0 ? "ok" : "broken:" + bad;
});
</script>"""


def write_report(
    ds: xr.Dataset,
    result: InspectResult,
    scanned: Scan,
    directory: str | os.PathLike[str],
    *,
    sample: int = 500,
    seed: int = 0,
) -> Path:
    """Write the PNGs and ``report.html`` into ``directory``; return the HTML's path.

    ``scanned`` is the pass :func:`~embstore.quality.inspect.inspect_store` made (with its
    covariance, so the PCA costs no second pass).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    order_by = result.color_by
    rows = sample_rows(ds, sample, seed=seed, order_by=order_by)
    figures, notes = _figures(ds, result, scanned, rows) if len(rows) else ({}, [])
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    if result.color_by is None:
        notes.insert(0, "pictures are not coloured: no label has values in at most 20 groups"
                     " (pass color_by / --color-by to choose one)")  # fmt: skip
    page = out / "report.html"
    write_text(page, _html(result, out, list(figures), len(rows), seed, notes))
    return page


def _figures(
    ds: xr.Dataset, result: InspectResult, scanned: Scan, rows: np.ndarray
) -> tuple[dict[str, Figure], list[str]]:
    variable, colour = result.variable, result.color_by
    source = result.summary.provenance.get("source")
    if not (isinstance(source, str) and source in ds.data_vars and source != variable):
        source = None
    # the sampled rows, read once (scattered rows touch most chunks) for every picture
    ds = ds[[v for v in (variable, source) if v]].isel({SAMPLE: rows}).load()
    rows = np.arange(len(rows))
    figures = {
        "cosine_similarity.png": plot_cosine_heatmap(ds, rows, variable=variable, order_by=colour),
        "distributions.png": plot_distributions(ds, result.summary, rows, variable=variable),
        "pca.png": plot_pca(ds, pca(scanned), rows, variable=variable, color_by=colour),
    }
    notes = []
    differing = departing_groups(ds, rows, variable=variable, group_by=colour)
    if differing:
        figures["profiles.png"] = plot_profiles(
            ds, rows, variable=variable, group_by=colour, chosen=differing
        )
    elif colour is not None:
        notes.append(f"no {colour} group's mean departs from the others beyond noise: the"
                     " per-group profiles would look alike and are left out")  # fmt: skip
    figures["l2_norms.png"] = plot_norms(result.summary)
    if source is not None:
        figures["before_after.png"] = plot_before_after(
            ds,
            rows,
            variable=variable,
            source=source,
            excluded_subjects=result.summary.provenance.get("exclude_subjects", []),
            categories=result.summary.provenance.get("categories"),
        )
    return figures, notes


def _counts(name: str, series: pd.Series, aliases: list[str]) -> str:
    """Rows per value, most rows first, the tail folded into "N more"; a label with many
    values summarised first; labels that group rows the same way named together."""
    shown: list[list[object]] = [[k, v] for k, v in series.iloc[:COUNT_ROWS].items()]
    rest = series.iloc[COUNT_ROWS:]
    if len(rest):
        shown.append([f"{len(rest)} more values", int(rest.sum())])
    also = f" (= {', '.join(aliases)})" if aliases else ""
    title = f"rows per {name}{also} ({len(series)} value{'s' if len(series) != 1 else ''})"
    note = ""
    if len(series) > LARGE_LABEL:
        per = series.drop("(missing)", errors="ignore")
        note = (
            f"<p>{len(per):,} values; rows per value: min {int(per.min())}, median "
            f"{float(per.median()):g}, max {int(per.max())}</p>"
        )
    return (
        f'<div class="count"><h3>{html.escape(title)}</h3>{note}'
        + _table([name, "rows"], shown)
        + "</div>"
    )


def _table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(
    result: InspectResult, out: Path, images: list[str], sampled: int, seed: int, notes: list[str]
) -> str:
    checks = [
        [
            name,
            "pass" if row["passed"] else "FAIL",
            row["count"],
            row["what"],
            "; ".join(row["examples"][:5]),
        ]
        for name, row in result.health.iterrows()
    ]
    norms = [[k, f"{v:.4g}"] for k, v in result.summary.norm_stats().items()]
    feats = result.summary.features
    feature_rows = [
        [
            stat,
            f"{float(np.nanmin(feats[stat])):.4g}",
            f"{float(np.nanmedian(feats[stat])):.4g}",
            f"{float(np.nanmax(feats[stat])):.4g}",
        ]
        for stat in ("mean", "std", "min", "max")
    ]
    aliases = result.summary.aliases
    counts = "".join(
        _counts(name, series, aliases.get(name, []))
        for name, series in result.summary.counts.items()
    )
    counts = f'<div class="counts">{counts}</div>' if counts else ""
    pictures = "".join(
        f'<figure><a href="{name}"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode((out / name).read_bytes()).decode()}"></a><figcaption><b>{name}</b>: {html.escape(CAPTIONS.get(name, ""))}</figcaption></figure>'
        for name in images
    )
    provenance = html.escape(json.dumps(result.summary.provenance, indent=2, default=str))
    folded = html.escape(_provenance_line(result.summary.provenance))
    remarks = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    remarks = f"<ul class=notes>{remarks}</ul>" if remarks else ""
    verdict = "all checks passed" if result.passed else "some checks FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embstore inspect: {html.escape(result.store)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}img{{max-width:100%}}
figure{{margin:1.5em 0}}figcaption{{font-size:14px;color:#333}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}
.counts{{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}}</style>{_LOAD_CHECK}</head>
<body><h1>embstore inspect</h1>
<p>Store <code>{html.escape(result.store)}</code>, variable <b>{html.escape(result.variable)}</b>,
{result.summary.rows} rows: <b>{verdict}</b>. Checks and statistics cover every row; pictures use
{sampled} rows sampled with seed {seed}.</p>
<h2>Health checks</h2>{_table(["check", "result", "count", "what", "examples"], checks)}
<h2>Statistics</h2><h3>L2 norms</h3>{_table(["statistic", "value"], norms)}
<h3>Per-feature statistics (min / median / max over features)</h3>{_table(["statistic", "min", "median", "max"], feature_rows)}
{counts}<h2>Pictures</h2>{remarks}{pictures}
<h2>Provenance of {html.escape(result.variable)}</h2><details><summary>{folded}</summary><pre>{provenance}</pre></details></body></html>
"""


def _provenance_line(record: dict[str, object]) -> str:
    """One line for the folded provenance: what made the variable, in a few words."""
    runs = record.get("runs")
    if isinstance(runs, list):
        actions = ", ".join(str(r.get("action")) for r in runs[-4:] if isinstance(r, dict))
        return f"model {record.get('model') or 'unknown'}; {len(runs)} runs ({actions}); show all"
    keys = ("source", "exclude_subjects", "categories", "rows_used", "time")
    shown = "; ".join(f"{k} {record[k]}" for k in keys if record.get(k) not in (None, [], ""))
    return (shown[:200] or "no record") + "; show all"
