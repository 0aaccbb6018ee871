"""How the calibrated duplicate threshold varies with the calibration's random draw, and what
precision it measures, by how much work calibration does: copies per original (all 16 edits,
or 8: every kind once) and how many close images the look-alike walk judges.

The copy benchmark's folder (``copies.py``: 782 edited photographs, the pretrained Lite0).
Everything random draws from work done once: the 16 edits of 120 originals embedded, and local
features on every image's close neighbours (similarity ≥ 0.8); each draw then replays
``calibration.negatives`` + ``choose_threshold`` on those tables (the same rule, without the
keypoints found again). Measured precision: over all pairs of the folder, the embedding alone.
    python benchmarks/calibration_draws.py [--draws 30]  → results/calibration_draws.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results
from copies import embedder, make_folder

# (originals, copies per original, images walked; None: the picture budget as shipped)
SETTINGS = [(30, 16, 300), (30, 8, 300), (30, 8, 200), (30, 8, 150), (30, 8, 100),
            (30, 8, 50), (30, 8, 25), (30, 8, 0), (30, 8, None), (30, 16, 782)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=30)
    args = ap.parse_args()

    from udml_cli import calibration as C
    from udml_cli import verify
    from udml_cli.api import embed_files
    from udml_cli.data.named_edits import KINDS, STRENGTHS
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import embed_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        paths, family, _ = make_folder(folder, 50, 800)
        model, cfg = embedder("last", folder)
        x, _ = embed_files(model, cfg, paths, where="last")
        rows = np.sort(np.random.default_rng(123).choice(len(paths), 120, replace=False))
        edits = [(k, s) for k in KINDS for s in STRENGTHS]
        data = C._Synthesised([(paths[r], k, s) for r in rows.tolist() for k, s in edits],
                              eval_transform(cfg.data), cfg.data.image_size)  # fmt: skip
        xc, _ = embed_dataset(model, cfg, data, resolve_engine(cfg.engine, inference=True),
                              "copies", None)  # fmt: skip
        pos_all = np.einsum("red,rd->re", xc.reshape(len(rows), len(edits), -1), x[rows])
        sim, found = C._flat(x).search(x, verify.NEIGHBOURS + 1)
        near = (found != np.arange(len(x))[:, None]) & (sim >= 0.8)
        r, c = np.repeat(np.arange(len(x)), near.sum(1)), found[near]
        inl, cov, tex = verify.verify_pairs(paths, r, c)
    keys = zip(r.tolist(), c.tolist(), strict=True)
    other = dict(zip(keys, verify.is_other(inl, cov, tex).tolist(), strict=True))
    n = len(x)
    nearest = np.where(found[:, 0] == np.arange(n), sim[:, 1], sim[:, 0])
    iu = np.triu_indices(n, 1)
    s_all = (x @ x.T)[iu]
    truth = family[iu[0]] == family[iu[1]]
    order = np.argsort(-s_all)
    ranked, tp = s_all[order], np.cumsum(truth[order])

    def precision(t: float) -> float:
        k = int(np.searchsorted(-ranked, -t, "right"))
        return float(tp[k - 1] / k) if k else 1.0

    def draw(originals: int, per: int, walked: int | None, seed: int) -> tuple[float, int]:
        rng = np.random.default_rng(seed)
        pos = pos_all[rng.choice(len(rows), originals, replace=False)]
        if per == 8:  # as calibration.sample_edits: kind j of the i-th original
            cols = [2 * j + STRENGTHS.index(s) for i in range(originals)
                    for j, (_, s) in enumerate(C.sample_edits(i))]  # fmt: skip
            pos = pos[np.repeat(np.arange(originals), 8), cols].reshape(originals, 8)
        floor = float(np.median(pos))
        cheap, close = nearest[nearest < floor], np.flatnonzero(nearest >= floor)
        walk = rng.permutation(close)
        if walked is None:
            walk = walk[: C.walk_size(n)]
            walk = walk[: C.walk_prefix(walk, sim[walk], found[walk], floor, C.walk_pictures(n))]
        else:
            walk = walk[:walked]
        judged, first, pictures = [], [], set()
        for w in walk.tolist():
            mine = found[w] != w
            look = mine & (sim[w] >= floor)
            pictures |= {w, *found[w][look].tolist()}
            judged += [
                s for f, s in zip(found[w][look], sim[w][look], strict=True) if other[(w, int(f))]
            ]
            below = mine & (sim[w] < floor)
            first += sim[w][below][:1].tolist()
        negs = np.concatenate([cheap, judged, first]).astype(np.float32)
        weights = np.concatenate([np.ones(len(cheap)),
                                  np.full(len(judged) + len(first), len(close) / max(len(walk), 1))])  # fmt: skip
        t = C.choose_threshold(pos.ravel().astype(np.float32), negs, 0.99, weights, n)
        return t, len(pictures)

    res = Results("calibration_draws")
    for originals, per, walked in SETTINGS:
        got = [draw(originals, per, walked, seed) for seed in range(args.draws)]
        t = np.array([g[0] for g in got])
        p = np.array([precision(v) for v in t])
        case = (f"{originals} originals × {per} copies, "
                + ("picture budget (as shipped)" if walked is None else f"{walked} walked"))  # fmt: skip
        res.add(case, "threshold mean", float(t.mean()))
        res.add(case, "threshold sd", float(t.std()))
        res.add(case, "threshold lowest", float(t.min()))
        res.add(case, "precision mean", float(p.mean()), higher_is_better=True)
        res.add(case, "precision lowest", float(p.min()), higher_is_better=True, target=0.98)
        res.add(case, "copies embedded", originals * per)
        res.add(case, "pictures' keypoints (mean)", float(np.mean([g[1] for g in got])))
    res.write()


if __name__ == "__main__":
    main()
