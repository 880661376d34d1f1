"""Attribution records as a self-contained HTML page (one row per text, words coloured by their score) and as a
PNG heatmap (matplotlib, the `report` extra). Colours are scaled per row by its largest absolute word score:
green pushes towards the target (class or continuation), red against it."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from lightning_llm.runtime.extras import require_extra

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.5em;vertical-align:top;
text-align:left}th{background:#f4f4f4}.w{padding:.1em .2em;margin:0 .05em;border-radius:3px;line-height:2}
.legend span{padding:.2em .5em;border-radius:3px;margin-right:.5em}"""


def _colour(score: float, scale: float) -> str:
    alpha = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    rgb = "22,163,74" if score >= 0 else "220,38,38"
    return f"rgba({rgb},{alpha:.3f})"


def _summary(record: dict[str, Any]) -> str:
    if record["kind"] == "label":
        head = f"<b>{html.escape(record['predicted_label'])}</b> p={record['probability']:.3f}"
        if record["target_id"] != record["predicted_id"]:
            head += f"<br>target: {html.escape(record['target_label'])} p={record['target_probability']:.3f}"
    else:
        head = f"next: <b>{html.escape(repr(record['target_text']))}</b> p={record['probability']:.3g}"
    return f"{head}<br><small>delta={record['delta']:.2g}</small>"


def html_page(records: list[dict[str, Any]], title: str) -> str:
    """The page: a legend, then per text its prediction, probability, convergence delta and coloured words
    (hover a word for its score)."""
    rows = []
    for i, record in enumerate(records, 1):
        scale = max((abs(s) for s in record["word_scores"]), default=0.0)
        words = " ".join(f'<span class="w" style="background:{_colour(s, scale)}" title="{s:+.4f}">'
                         f"{html.escape(w)}</span>" for w, s in zip(record["words"], record["word_scores"]))
        rows.append(f"<tr><td>{i}</td><td>{_summary(record)}</td><td>{words}</td></tr>")
    legend = ('<p class="legend"><span style="background:rgba(22,163,74,.8)">towards the target</span>'
              '<span style="background:rgba(220,38,38,.8)">against it</span>integrated gradients on the input '
              "embeddings, summed over sub-words; colour scaled per row</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{legend}<table><thead><tr><th>#</th>"
            f"<th>prediction</th><th>words</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n")


def write_png(records: list[dict[str, Any]], path: Path, max_words: int = 40) -> Path:
    """A heatmap, one row per text and one cell per word (its first `max_words`), each labelled with its word;
    rows scaled like the HTML page."""
    require_extra("matplotlib", "report", "png=true")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = min(max(len(r["words"]) for r in records), max_words)
    grid = np.full((len(records), width), np.nan)
    for row, record in enumerate(records):
        scores = np.asarray(record["word_scores"][:width], dtype=float)
        scale = np.abs(np.asarray(record["word_scores"], dtype=float)).max(initial=0.0)
        grid[row, :len(scores)] = scores / scale if scale > 0 else 0.0
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.85 * width, 40), 0.9 + 0.55 * len(records)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    for row, record in enumerate(records):
        for col, word in enumerate(record["words"][:width]):
            ax.text(col, row, word if len(word) <= 10 else word[:9] + "…", ha="center", va="center", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks(range(len(records)),
                  [f"{r.get('predicted_label', repr(r.get('target_text')))} {r['probability']:.2f}" for r in records],
                  fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="attribution / row max")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # no half-written image under the final name
    try:
        fig.savefig(tmp, dpi=130)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
