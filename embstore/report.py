"""The ``inspect --report`` folder: PNGs plus one self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ._fs import write_text
from .inspect import pca, sample_rows
from .plots import plot_cosine_heatmap, plot_distributions, plot_norms, plot_pca, plot_profiles

if TYPE_CHECKING:
    from .inspect import InspectResult

PROFILE_ROWS = 5

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
    directory: str | os.PathLike[str],
    *,
    sample: int = 500,
    seed: int = 0,
    color_by: str = "age_mo",
) -> Path:
    """Write the PNGs and ``report.html`` into ``directory``; return the HTML's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    variable = result.variable
    order_by = color_by if color_by in ds.coords else None
    rows = sample_rows(ds, sample, seed=seed, order_by=order_by)
    figures = {}
    if len(rows):
        model = pca(ds, variable=variable)
        figures = {
            "cosine_similarity.png": plot_cosine_heatmap(
                ds, rows, variable=variable, order_by=order_by
            ),
            "distributions.png": plot_distributions(ds, result.summary, rows, variable=variable),
            "pca.png": plot_pca(ds, model, rows, variable=variable, color_by=order_by),
            "profiles.png": plot_profiles(ds, np.sort(rows)[:PROFILE_ROWS], variable=variable),
            "l2_norms.png": plot_norms(result.summary),
        }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    page = out / "report.html"
    write_text(page, _html(result, out, list(figures), len(rows), seed))
    return page


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(result: InspectResult, out: Path, images: list[str], sampled: int, seed: int) -> str:
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
    counts = "".join(
        f"<h3>rows per {html.escape(name)}</h3>"
        + _table([name, "rows"], [[k, v] for k, v in series.items()][:60])
        for name, series in result.summary.counts.items()
    )
    pictures = "".join(
        f'<figure><a href="{name}"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode((out / name).read_bytes()).decode()}"></a><figcaption>{name}</figcaption></figure>'
        for name in images
    )
    provenance = html.escape(json.dumps(result.summary.provenance, indent=1)) or "(stored vectors)"
    verdict = "all checks passed" if result.passed else "some checks FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embstore inspect: {html.escape(result.store)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}img{{max-width:100%}}
figure{{margin:1em 0}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>{_LOAD_CHECK}</head>
<body><h1>embstore inspect</h1>
<p>Store <code>{html.escape(result.store)}</code>, variable <b>{html.escape(result.variable)}</b>,
{result.summary.rows} rows: <b>{verdict}</b>. Checks and statistics cover every row; pictures use
{sampled} rows sampled with seed {seed}.</p>
<h2>Provenance of {html.escape(result.variable)}</h2><pre>{provenance}</pre>
<h2>Health checks</h2>{_table(["check", "result", "count", "what", "examples"], checks)}
<h2>Statistics</h2><h3>L2 norms</h3>{_table(["statistic", "value"], norms)}
<h3>Per-feature statistics (min / median / max over features)</h3>{_table(["statistic", "min", "median", "max"], feature_rows)}
{counts}<h2>Pictures</h2>{pictures}</body></html>
"""
