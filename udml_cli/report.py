"""``udml report``: one self-contained HTML page (thumbnails inlined, charts as inline SVG).

For a run folder: training curves and re-clustering diagnostics from metrics.jsonl, the cluster
sizes and a contact sheet of the biggest clusters (the last checkpoint's pseudo-labels), and a
retrieval grid (green/red borders where labels are known). For an index: the retrieval grid,
the largest duplicate groups, cluster sizes and contact sheets of a k-means of its vectors.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start;margin:6px 0}
.cell{width:104px;font-size:10px;text-align:center;overflow:hidden}
.cell img{width:96px;height:96px;object-fit:contain;background:#f4f4f4;border:4px solid #ccc;border-radius:4px}
.cell.q img{border-color:#36c}.cell.ok img{border-color:#2a2}.cell.bad img{border-color:#d22}
.tile{font-size:10px;text-align:center;max-width:480px;overflow-wrap:anywhere}
.tile img{height:160px;width:auto;border:4px solid #ccc;border-radius:4px}
.tile.keep img{border-color:#2a2}.tile.keep{font-weight:bold}
table.scores{border-collapse:collapse;font-size:14px}
.scores td,.scores th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}
.scores td:first-child,.scores th:first-child,.scores td:nth-child(2){text-align:left}
.scores .change td{font-weight:bold}.scores .up{color:#080}.scores .down{color:#c00}
.charts{display:flex;flex-wrap:wrap;gap:16px}.note{color:#666;font-size:13px}
"""


def jpeg_thumbnail(path: Path, box: tuple[int, int], quality: int = 80) -> bytes:
    """A JPEG of the image within ``box`` (aspect kept, never enlarged), decoded by the safe
    loader; a grey square for one that cannot be read."""
    from PIL import Image

    from udml_cli.data.images import ImageError, load_rgb

    try:
        im = load_rgb(path)
        im.thumbnail(box)
    except ImageError:
        im = Image.new("RGB", (min(box), min(box)), (200, 200, 200))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def thumb(path: Path, size: int | tuple[int, int] = 96) -> str:
    """``jpeg_thumbnail`` as a data URI, within ``size`` (a box, or a square's side)."""
    box = (size, size) if isinstance(size, int) else size
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_thumbnail(path, box)).decode()


def _short(path: Path) -> str:
    """A caption: the file and its folder (names alone repeat, e.g. one per vendor)."""
    return "/".join(path.parts[-2:])


def cell(path: Path, caption: str, kind: str = "") -> str:
    return (
        f'<div class="cell {kind}"><img src="{thumb(path)}" alt="{html.escape(path.name)}">'
        f"<br>{html.escape(caption)}</div>"
    )


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    import math

    if hi <= lo:  # a flat series: a band around it
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda v: abs(math.log(v / raw)))
    first = math.floor(lo / step + 1e-9) * step
    return [round(first + i * step, 12) for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]


def _tick_format(values: list[float]) -> str:
    """As many decimals as the tick step needs (0.02 → 2; 20 → 0); large values in g."""
    import math

    step = values[1] - values[0] if len(values) > 1 else abs(values[0]) or 1
    if max(abs(v) for v in values) >= 1e6:
        return ".3g"
    return f".{max(0, -math.floor(math.log10(step) + 1e-9))}f"


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str = "step",
               ylabel: str = "", w=500, h=210) -> str:  # fmt: skip
    """Polylines of (x, y) series on shared axes: ticks and grid lines on both, axis labels
    (with units), the legend above the plot (never over a line); a lone point drawn as a dot;
    whole ticks for a few steps or epochs; empty series left out."""
    series = {name: points for name, points in series.items() if points}
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xlo, xhi = min(p[0] for p in pts), max(p[0] for p in pts)
    counts = all(float(p[0]).is_integer() for p in pts)  # steps or epochs: no 0.2 epoch
    if counts and xhi - xlo < 4:  # too few for ticks(): each whole count, one each side if flat
        pad = int(xlo == xhi)
        xt = [float(x) for x in range(int(xlo) - pad, int(xhi) + pad + 1)]
    else:
        xt = ticks(xlo, xhi)
    yt = ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    xf, yf = _tick_format(xt), _tick_format(yt)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    left, right, top, bottom = 58, w - 12, 44, h - 36  # the plot area
    sx = (right - left) / ((x1 - x0) or 1)
    sy = (bottom - top) / ((y1 - y0) or 1)

    def px(x: float) -> float:
        return left + (x - x0) * sx

    def py(y: float) -> float:
        return bottom - (y - y0) * sy

    colours = ["#36c", "#d52", "#2a2", "#a3a", "#888"]
    out = [f'<svg width="{w}" height="{h}" role="img"><title>{html.escape(title)}</title>',
           f'<text x="4" y="14" font-size="12" font-weight="bold">{html.escape(title)}</text>']  # fmt: skip
    for y in yt:
        out.append(f'<line x1="{left}" x2="{right}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   'stroke="#eee"/>')  # fmt: skip
        out.append(f'<text x="{left - 4}" y="{py(y) + 3:.1f}" font-size="10" '
                   f'text-anchor="end">{y:{yf}}</text>')  # fmt: skip
    for x in xt:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                   'stroke="#666"/>')  # fmt: skip
        out.append(f'<text x="{px(x):.1f}" y="{bottom + 15}" font-size="10" '
                   f'text-anchor="middle">{x:{xf}}</text>')  # fmt: skip
    out.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#666"/>'
               f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="#666"/>')  # fmt: skip
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{h - 4}" font-size="11" '
               f'text-anchor="middle">{html.escape(xlabel)}</text>')  # fmt: skip
    if ylabel:
        out.append(f'<text transform="translate(12,{(top + bottom) / 2:.0f}) rotate(-90)" '
                   f'font-size="11" text-anchor="middle">{html.escape(ylabel)}</text>')  # fmt: skip
    lx = left
    for i, (name, s) in enumerate(series.items()):
        c = colours[i % len(colours)]
        poly = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{poly}"/>')
        if len(s) == 1:  # one point makes no line: a dot, so a one-step run's chart is not empty
            out.append(f'<circle cx="{px(s[0][0]):.1f}" cy="{py(s[0][1]):.1f}" r="3" fill="{c}"/>')
        if len(series) > 1:  # the legend: above the plot area
            out.append(f'<rect x="{lx}" y="24" width="10" height="10" fill="{c}"/>'
                       f'<text x="{lx + 14}" y="33" font-size="11">{html.escape(name)}</text>')  # fmt: skip
            lx += 24 + 7 * len(name)
    return "".join(out) + "</svg>"


def bar_chart(title: str, values: list[int], w=520, h=170) -> str:
    """Cluster sizes, largest first."""
    values = sorted(values, reverse=True)
    if not values:
        return ""
    top = max(values) or 1
    bw = (w - 60) / len(values)
    bars = "".join(
        f'<rect x="{50 + i * bw:.1f}" y="{h - 20 - (h - 40) * v / top:.1f}" '
        f'width="{max(bw - 0.5, 0.5):.1f}" height="{(h - 40) * v / top:.1f}" fill="#36c"/>'
        for i, v in enumerate(values)
    )
    return (f'<svg width="{w}" height="{h}" role="img"><title>{html.escape(title)}</title>'
            f'<text x="4" y="14" font-size="12">{html.escape(title)}</text>'
            f'<text x="4" y="30" font-size="10">{top}</text>{bars}</svg>')  # fmt: skip


def page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections if content)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            "</body></html>")  # fmt: skip


def retrieval_grid(x: np.ndarray, paths: list[Path], labels, queries: int = 8, k: int = 5,
                   seed: int = 0) -> str:  # fmt: skip
    """Sample queries, their top-k (self excluded); green/red by label when labels are known."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), min(queries, len(x)), replace=False)
    sims = x[picks] @ x.T
    sims[np.arange(len(picks)), picks] = -np.inf
    rows = []
    for qi, row in zip(picks, sims, strict=True):
        top = np.argsort(-row)[:k]
        cells = [cell(paths[qi], f"query: {_short(paths[qi])}", "q")]
        for j in top:
            kind = "" if labels is None else ("ok" if labels[j] == labels[qi] else "bad")
            cells.append(cell(paths[j], f"{row[j]:.3f}", kind))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    legend = "" if labels is None else '<p class="note">green: same class, red: another</p>'
    return legend + "".join(rows)


def contact_sheets(assign: np.ndarray, paths: list[Path], clusters: int = 6, per: int = 12) -> str:
    sizes = np.bincount(assign)
    out = []
    for c in np.argsort(-sizes)[:clusters]:
        members = np.flatnonzero(assign == c)[:per]
        cells = "".join(cell(paths[i], _short(paths[i])) for i in members)
        out.append(f"<p>cluster {c}: {sizes[c]} images</p><div class='row'>{cells}</div>")
    return "".join(out)


def duplicate_section(groups, paths: list[Path], most: int = 10, rule: str | None = None) -> str:
    """Each group side by side at one height (aspect kept), the kept file marked when a keep
    ``rule`` chose one, each other file's strongest link, and the group's links listed.
    ``groups``: ``review.Group`` records or ``(rows, weakest)`` pairs."""
    from udml_cli.review import Group

    if not groups:
        return '<p class="note">no near-duplicates at this threshold</p>'
    out = []
    for g in groups[:most]:
        g = g if isinstance(g, Group) else Group(list(g[0]), g[1], [])
        best: dict[int, tuple[float, int]] = {}
        for a, b, sim in g.pairs:
            for x, y in ((a, b), (b, a)):
                if sim > best.get(x, (-2.0, -1))[0]:
                    best[x] = (sim, y)
        order = sorted(g.members[:12], key=lambda r: r != g.keep)
        cells = []
        for r in order:
            if r == g.keep:
                cap, kind = f"keep ({rule}) · {_short(paths[r])}", "keep"
            elif r in best:
                sim, other = best[r]
                cap, kind = f"{sim:.3f} ↔ {paths[other].name} · {_short(paths[r])}", ""
            else:
                cap, kind = _short(paths[r]), ""
            cells.append(tile(paths[r], cap, kind))
        links = "; ".join(f"{html.escape(paths[a].name)} ↔ {html.escape(paths[b].name)} {sim:.3f}"
                          for a, b, sim in g.pairs[:20])  # fmt: skip
        more = f" … {len(g.pairs) - 20} more" if len(g.pairs) > 20 else ""
        out.append(
            f"<p>{len(g.members)} images, similarity ≥ {g.weakest:.3f}</p>"
            f"<div class='row dup'>{''.join(cells)}</div>"
            + (f"<p class='note'>links: {links}{more}</p>" if links else "")
        )
    return "".join(out)


def tile(path: Path, caption: str, kind: str = "") -> str:
    """A picture at the row's height with its own aspect ratio (a duplicate group's member)."""
    return (
        f'<div class="tile {kind}"><img src="{thumb(path, (480, 160))}" '
        f'alt="{html.escape(path.name)}"><br>{html.escape(caption)}</div>'
    )


def curves(run_dir: Path) -> str:
    from udml_cli.runs import read_metrics, run_losses

    events = read_metrics(run_dir)

    def points(event: str, x: str, y: str, scale: float = 1.0) -> list[tuple[float, float]]:
        """(x, y) of every ``event`` record holding both as numbers (a damaged or older record
        without them is left out, not an error)."""
        return [(e[x], scale * e[y]) for e in events if e["event"] == event
                and _number(e.get(x)) and _number(e.get(y))]  # fmt: skip

    r1 = [dict(e, r1=e["recall_at"].get("1")) for e in events
          if e["event"] == "eval" and isinstance(e.get("recall_at"), dict)]  # fmt: skip
    charts = [  # each loss part on its own axes: their scales differ (rotation ~1.4, Weight ~0.3)
        *[line_chart(f"{k} per step", {k: points("step", "step", k)}, "step", "loss")
          for k in run_losses(run_dir)],
        line_chart("training speed", {"images/s": points("step", "step", "images_per_s")},
                   "step", "images / s"),
        line_chart("re-clustering: largest cluster / singletons", {
            "largest": points("cluster", "epoch", "size_max"),
            "singletons": points("cluster", "epoch", "singletons"),
        }, "epoch", "images"),
        line_chart("re-clustering NMI vs true labels", {"NMI": points("cluster", "epoch", "nmi", 100)},
                   "epoch", "NMI (%)"),
        line_chart("STML neighbours of the same true class", {
            "precision": points("neighbours", "epoch", "precision", 100)
        }, "epoch", "precision (%)"),
        line_chart("evaluation R@1", {
            "R@1": [(e["epoch"], 100 * e["r1"]) for e in r1 if _number(e["r1"])]
        }, "epoch", "R@1 (%)"),
    ]  # fmt: skip
    return f'<div class="charts">{"".join(c for c in charts if c)}</div>'


def _number(v) -> bool:
    import math

    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def index_report(index_dir: Path, threshold: float | None = None) -> str:
    from udml_cli.clustering import auto_clusters, kmeans
    from udml_cli.index import Index
    from udml_cli.review import find_duplicates

    idx = Index.load(index_dir)
    paths = [idx.folder / p for p in idx.paths]
    found = find_duplicates(idx, threshold)
    groups = found.groups
    k = min(auto_clusters(len(paths), 2), len(paths))
    km = kmeans(idx.vectors, k, seed=0)
    return page(f"udml index: {idx.folder} ({len(paths)} images)", [
        ("Search: sample queries and their nearest images", retrieval_grid(idx.vectors, paths, None)),
        (f"Near-duplicates ({found.joined_by})", duplicate_section(groups, paths)),
        (f"Cluster sizes (k-means, k = {k})", bar_chart("images per cluster", np.bincount(km.labels, minlength=k).tolist())),
        ("The biggest clusters", contact_sheets(km.labels, paths)),
    ])  # fmt: skip


SCORE_COLUMNS = [("R@1", "1"), ("R@2", "2"), ("R@4", "4"), ("R@8", "8")]


def run_evaluations(run_dir: Path) -> list[tuple[str, dict]]:
    """Every labelled evaluation of a run: ``udml train``'s (metrics.jsonl) in order, then the
    ``udml eval --json`` files beside it (oldest first), each as ``(name, result)``."""
    import json

    from udml_cli.runs import read_metrics

    found = []
    if (run_dir / "metrics.jsonl").is_file():
        for e in read_metrics(run_dir):
            if e.get("event") == "eval" and _scored(e):
                at = e.get("at", "epoch")
                found.append((f"{at} (epoch {e.get('epoch', '?')}, in training)", e))
    files = sorted(run_dir.glob("*.json"), key=lambda f: (f.stat().st_mtime_ns, f.name))
    for f in files:
        try:
            result = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and _scored(result):
            found.append((f.name, result))
    return found


def _scored(r: dict) -> bool:
    recall = r.get("recall_at")
    return (isinstance(recall, dict) and all(_number(recall.get(k)) for _, k in SCORE_COLUMNS)
            and _number(r.get("nmi")) and _number(r.get("map_at_r")))  # fmt: skip


def score_table(evaluations: list[tuple[str, dict]]) -> str:
    """The run's scores, first to last, and the change from the first to the last (percent)."""
    if not evaluations:
        return ""

    def values(r: dict) -> list[float]:
        return [100 * r["recall_at"][k] for _, k in SCORE_COLUMNS] + [100 * r["nmi"],
                                                                      100 * r["map_at_r"]]  # fmt: skip

    head = "".join(f"<th>{h}</th>" for h in ["evaluation", "on", *[c for c, _ in SCORE_COLUMNS],
                                             "NMI", "MAP@R"])  # fmt: skip
    rows = []
    for name, r in evaluations:
        where = html.escape(f"{r.get('dataset', '?')}/{r.get('split', '?')}")
        cells = "".join(f"<td>{v:.2f}</td>" for v in values(r))
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{where}</td>{cells}</tr>")
    if len(evaluations) > 1:
        first, last = values(evaluations[0][1]), values(evaluations[-1][1])
        cells = "".join(
            f'<td class="{"up" if b > a else "down" if b < a else ""}">{b - a:+.2f}</td>'
            for a, b in zip(first, last, strict=True)
        )
        rows.append(f"<tr class='change'><td>change, first → last</td><td></td>{cells}</tr>")
    return (f"<table class='scores'><tr>{head}</tr>{''.join(rows)}</table>"
            "<p class='note'>percent; held-out classes where the dataset has a test split</p>")  # fmt: skip


def run_report(run_dir: Path, engine, sample: int = 300) -> str:
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.errors import UsageError
    from udml_cli.inference import embed_dataset
    from udml_cli.models.checkpoint import load_checkpoint, model_from_checkpoint

    last = run_dir / "last.pt"
    if not last.is_file():
        raise UsageError(
            f"{run_dir}: no last.pt: not a run folder (or an index without index.json)"
        )
    payload = load_checkpoint(last, training=True)
    model, cfg = model_from_checkpoint(payload, last)
    ref = resolve_dataset(payload.get("dataset") or cfg.data.dataset, cfg.data.data_root)
    skipped = set(payload.get("skipped", []))
    train = [s for s in read_split(ref, "train") if s.rel not in skipped]
    pseudo = payload.get("pseudo_labels")  # UDML-SS's; STML has no pseudo-classes
    pseudo = pseudo.numpy() if pseudo is not None else np.zeros(0, np.int64)
    # the clusters the run made (not cluster.num_clusters: "auto" there, or unused by a method
    # that does not cluster, e.g. the invariance method alone: one pseudo-class for all)
    centroids = payload.get("centroids")
    k = len(centroids) if centroids is not None else 0
    sections = [("Scores", score_table(run_evaluations(run_dir)))]
    if (run_dir / "metrics.jsonl").is_file():
        sections.append(("Training", curves(run_dir)))
    if len(train) == len(pseudo) and k > 1:
        sizes = np.bincount(pseudo, minlength=k).tolist()
        sections += [
            ("Pseudo-class sizes (the last clustering)", bar_chart("images per cluster", sizes)),
            ("The biggest pseudo-classes", contact_sheets(pseudo, [s.path for s in train])),
        ]
    pool = read_split(ref, "test") if ref.labelled else train
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in sorted(rng.choice(len(pool), min(sample, len(pool)), replace=False))]
    data = ImageDataset.evaluated(pool, cfg.data)
    split = "test" if ref.labelled else "train"
    x, ok = embed_dataset(model, cfg, data, engine, f"{ref.name}/{split} (sample)")
    kept = [pool[i] for i in np.flatnonzero(ok)]
    labels = np.array([s.label for s in kept]) if ref.labelled else None
    sections.append((
        f"Retrieval on {ref.name}/{split} ({len(kept)} sampled images)",
        retrieval_grid(x, [s.path for s in kept], labels),
    ))  # fmt: skip
    return page(f"udml run: {run_dir}", sections)
