"""The Python API: what the commands do, without a terminal. Importable from ``udml_cli``.

    import udml_cli as udml
    cfg = udml.settings("photos", train={"epochs": 5})            # template / file / Config + sections
    last = udml.train("runs/photos", cfg, dataset="~/photos")       # → runs/photos/last.pt
    model, cfg = udml.load_model(checkpoint=last)
    vectors, paths = udml.embed_folder("~/photos", checkpoint=last)
    index = udml.build_index("~/photos", "idx/photos", checkpoint=last)
    sims, rows = index.search(vectors[:3], k=5)

Nothing here asks questions or prints to stdout; mistakes raise ``UdmlError`` with the same one
line the CLI shows. The CLI maps its flags onto these and renders what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from udml_cli.config import Config, load_config, model_flags


def settings(config: Config | str | Path | None = None, **sections: dict[str, Any]) -> Config:
    """A config: defaults < ``config`` (a Config, a TOML file or a shipped template name) <
    ``sections`` (``train={"lr": 1e-4}``; every key validated as on the command line)."""
    base = config.model_dump(mode="json") if isinstance(config, Config) else None
    path = None if isinstance(config, Config) else config
    overrides = {
        f"{sec}.{key}": value for sec, values in sections.items() for key, value in values.items()
    }
    return load_config(path, None, overrides, base=base)


def load_model(
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    weights: str = "imagenet",
    image_size: int | None = None,
    device: str = "auto",
):
    """``(model, config)`` of a checkpoint, or of a backbone's pooled feature (the start)."""
    from udml_cli.inference import load_model as _load

    flags = model_flags(backbone or None, weights if backbone else None, device, image_size)
    cfg = load_config(None, None, flags)
    model, cfg, _ = _load(cfg, Path(checkpoint) if checkpoint else None, backbone)
    return model, cfg


def index_model(idx, device: str = "auto"):
    """``(model, config)`` an index (``index.Index``) was built with: the same checkpoint file
    (checked: gone or changed is refused) or backbone; its vectors' dimension checked."""
    from udml_cli.errors import UsageError
    from udml_cli.index import DamagedIndex, file_sha256

    m = idx.model
    if "checkpoint" in m:
        ckpt = Path(str(m["checkpoint"]))
        if not ckpt.is_file() or file_sha256(ckpt) != m.get("sha256"):
            raise UsageError(
                f"the index was built with {ckpt}, which is gone or changed since; "
                "re-run udml index with the checkpoint you want"
            )
        model, cfg = load_model(ckpt, image_size=m["image_size"], device=device)
        idx.check_model(model.dim, str(ckpt))
        return model, cfg
    try:
        backbone, weights, size = str(m["backbone"]), str(m["weights"]), int(m["image_size"])
    except (KeyError, TypeError, ValueError):
        raise DamagedIndex(f"{idx.out}/index.json: its model entry is malformed") from None
    model, cfg = load_model(None, backbone, weights, size, device)
    idx.check_model(model.dim, f"{backbone} ({weights})")
    return model, cfg


def embed_files(model, cfg: Config, files: list[Path], strict: bool = False, progress=None,
                where: str = "images", none_ok: bool = False, allocate=None):  # fmt: skip
    """``(vectors, ok)``: one float32 row per readable file (in order) and which files were.
    ``allocate(n, dim)`` puts the rows somewhere else than memory (``npyfile.RowFile``)."""
    from udml_cli.data.images import FolderDataset
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import embed_dataset

    dataset = FolderDataset(files, eval_transform(cfg.data), cfg.data.image_size)
    engine = resolve_engine(cfg.engine, inference=True)
    return embed_dataset(model, cfg, dataset, engine, where, progress, strict, none_ok, allocate)


def embed_folder(folder: str | Path, checkpoint=None, backbone=None, weights="imagenet",
                 image_size=None, device="auto", recursive=True, strict=False, progress=None):  # fmt: skip
    """``(vectors, paths)``: the images under ``folder`` (sorted), unreadable ones left out."""
    from udml_cli.data.layout import image_files
    from udml_cli.errors import DatasetError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    files = image_files(folder, recursive)
    if not files:
        raise DatasetError(f"no images in {folder}" + ("" if recursive else " (add --recursive)"))
    model, cfg = load_model(checkpoint, backbone, weights, image_size, device)
    x, ok = embed_files(model, cfg, files, strict, progress, folder.name)
    return x, [f for f, good in zip(files, ok.tolist(), strict=True) if good]


def train(out: str | Path, config: Config | str | Path | None = None, dataset: str | None = None,
          resume: bool = False, progress=None, *, replace: bool = False, ask=None,
          set_values: list[str] | None = None, flags: dict[str, Any] | None = None,
          **sections) -> Path:  # fmt: skip
    """Train (or ``resume``) into the run folder ``out``; returns the last checkpoint.

    The whole ``udml train`` flow: the run folder is locked against a second writer; an existing
    run is refused, or with ``replace=True`` moved aside (and put back if the new run stops
    before its first checkpoint); a damaged ``last.pt`` falls back to the newest intact epoch
    file only when ``ask(question, refuse)`` says yes (no ``ask``: refused). Where a labelled
    split exists (the data's own test split or ``data.eval_dataset``), the network is evaluated
    at the start and the end (``train.final_eval``) and every ``train.eval_step`` epochs; the
    scores go to metrics.jsonl (``run_summary`` reads them back).
    ``set_values`` (``"section.key=value"``) and ``flags`` (dotted keys, ``None`` = unset) are
    the CLI's spellings of ``sections``.

    Under torchrun every process calls this; rank 0 alone locks, replaces and writes the run
    folder (see ``training``), the others compute their share."""
    import contextlib

    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import distributed_session, launched_rank, resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.fileio import ensure_writable_dir
    from udml_cli.runs import ReplacedRun, RunLock, holds_run, resume_changes, resume_checkpoint
    from udml_cli.training import Trainer

    out = Path(out).expanduser()
    dotted = dict(flags or {})
    if dataset is not None:
        dotted["data.dataset"] = dataset
    dotted |= {
        f"{sec}.{key}": value for sec, values in sections.items() for key, value in values.items()
    }
    base = config.model_dump(mode="json") if isinstance(config, Config) else None
    path = None if isinstance(config, Config) else config
    if resume and not out.is_dir():
        raise UsageError(f"nothing to resume: {out} is not a run folder")
    ensure_writable_dir(out, "--out")

    def asked(question: str, refuse: str) -> None:
        if ask is None or not ask(question, refuse):
            raise UsageError(refuse)

    main = launched_rank()[0] == 0
    with RunLock(out) if main else contextlib.nullcontext():
        checkpoint = payload = None
        if resume:
            checkpoint, payload = resume_checkpoint(out, asked)
            # the run's own config is the base; the given config, --set and flags on top
            cfg = load_config(path, set_values, dotted, base=base or payload["config"])
            if cfg.model.layers == ["auto"]:  # the run chose its stage when it started
                cfg.model.layers = list(
                    (payload["config"].get("model") or {}).get("layers", ["last"])
                )
            resume_changes(payload["config"], cfg, checkpoint)  # named before the data is read
        else:
            cfg = load_config(path, set_values, dotted, base=base)
        if cfg.data.dataset is None:
            raise UsageError("no dataset: pass --dataset NAME (see `udml dataset list`)")
        ref = resolve_dataset(cfg.data.dataset, cfg.data.data_root)
        replacing = main and not resume and holds_run(out)
        if replacing and not replace:
            asked(
                f"{out} holds a run. Start over and replace it?",
                f"{out} already holds a run; use --resume to continue it or --yes to start over",
            )
        engine = resolve_engine(cfg.engine)
        # checks the settings against the data, then picks model.layers = ["auto"]'s stage
        trainer = Trainer(cfg, ref, out, engine, progress)
        scorer = _scorer(cfg, ref, engine, progress, trainer.images)
        replaced = ReplacedRun(out) if replacing else None  # the new run starts empty
        try:
            with distributed_session(engine):
                return trainer.run(checkpoint, scorer, payload)
        finally:
            if replaced is not None:
                if (out / "last.pt").is_file():
                    replaced.commit()
                else:  # the new run left nothing worth keeping: the old one comes back
                    replaced.rollback()


def _scorer(cfg: Config, ref, engine, progress, images=None):
    """What training scores at each evaluation: R@K, NMI … on ``data.eval_dataset``, else on the
    training data's own test split, and the label-free scores (``selection.py``) on the training
    ``images``; ``None`` when there is nothing to score."""
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.errors import UsageError, note
    from udml_cli.inference import evaluate
    from udml_cli.selection import label_free_scores

    eval_ref = None
    if cfg.data.eval_dataset:
        eval_ref = resolve_dataset(cfg.data.eval_dataset, cfg.data.data_root)
        if not eval_ref.labelled:
            raise UsageError(
                f"--eval-dataset {cfg.data.eval_dataset} is an unlabelled collection: evaluation "
                "needs a labelled test split"
            )
    elif ref.labelled:
        eval_ref = ref
    label_free = images is not None and cfg.eval.label_free > 0
    if eval_ref is None and (cfg.train.eval_step or cfg.train.final_eval):
        note("no labelled data to evaluate on: " + ("label-free scores only" if label_free else
             "no scores this run") + " (--eval-dataset NAME)")  # fmt: skip
    if eval_ref is None and not label_free:
        return None

    def score(model) -> dict:
        result = evaluate(model, cfg, eval_ref, cfg.eval.split, engine, progress) \
            if eval_ref is not None else {}  # fmt: skip
        if label_free:
            result["label_free"] = label_free_scores(model, cfg, images.plain, engine, progress)
        return result

    return score


def evaluate(cfg: Config | None = None, checkpoint=None, backbone=None, dataset=None,
             data_root=None, split: str = "test", progress=None) -> dict:  # fmt: skip
    """Recall@K, NMI, MAP@R and R-Precision of a checkpoint (or, with ``backbone``, of its
    pooled feature: the start) on a labelled split; ``dataset``: default the checkpoint's.
    ``result["model"]`` names what was scored."""
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import evaluate as score
    from udml_cli.inference import model_and_dataset

    cfg = cfg if cfg is not None else load_config()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    model, cfg, ref = model_and_dataset(cfg, checkpoint, backbone, dataset, data_root)
    result = score(model, cfg, ref, split, resolve_engine(cfg.engine, inference=True), progress)
    result["model"] = str(checkpoint) if checkpoint else f"{cfg.model.backbone}:{cfg.model.weights}"
    return result


def label_free(cfg: Config | None = None, checkpoint=None, backbone=None, dataset=None,
               data_root=None, split: str = "train", progress=None, each_layer: bool = False):  # fmt: skip
    """The label-free scores (``selection.py``) of a checkpoint, or of a backbone's start, on a
    split's own images (no labels needed: an unlabelled collection works); ``dataset``:
    default the checkpoint's. ``each_layer`` (a backbone's start only): a list, one row per
    stage of the backbone alone, highest score first — which ``model.layers`` to use."""
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.inference import dataset_ref, model_and_dataset, with_backbone
    from udml_cli.selection import label_free_scores, score_layers

    cfg = cfg if cfg is not None else load_config()
    if cfg.eval.label_free < 2 and not each_layer:  # --each-layer: model.auto_images (>= 2)
        raise UsageError("eval.label_free must be at least 2 images to score label-free")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if each_layer:
        if checkpoint is not None or backbone is None:
            raise UsageError(
                "--each-layer scores the stages of a pretrained backbone: pass --backbone NAME, "
                "not a checkpoint"
            )
        cfg = with_backbone(cfg, backbone)
        ref = dataset_ref(cfg, dataset, data_root)
    else:
        model, cfg, ref = model_and_dataset(cfg, checkpoint, backbone, dataset, data_root)
    plain = ImageDataset.evaluated(read_split(ref, split), cfg.data)
    engine, where = resolve_engine(cfg.engine, inference=True), f"{ref.name}/{split}"
    name = str(checkpoint) if checkpoint else f"{cfg.model.backbone}:{cfg.model.weights}"
    if each_layer:
        rows = score_layers(cfg, plain, engine, progress, where)
        return [r | {"dataset": ref.name, "split": split, "model": name} for r in rows]
    result = label_free_scores(model, cfg, plain, engine, progress, where)
    return result | {"dataset": ref.name, "split": split, "model": name}


def evaluate_run(run: str | Path, cfg: Config | None = None, dataset=None, data_root=None,
                 split: str = "test", progress=None, checkpoints=None,
                 label_free_only: bool = False) -> tuple[list[dict], int]:  # fmt: skip
    """Every checkpoint of a run folder scored (``evaluate``), in epoch order, and the index of
    the best R@1 (choosing it is selection on the evaluated split). ``checkpoints``: the run's
    ``runs.run_checkpoints``, when the caller has listed them already. ``label_free_only``: the
    label-free scores of each on the run's training images instead (``split`` ignored), and the
    index of the highest."""
    from udml_cli.runs import run_checkpoints

    paths = checkpoints if checkpoints is not None else run_checkpoints(Path(run))
    if label_free_only:
        rows = [
            label_free(cfg, path, None, dataset, data_root, "train", progress) for path in paths
        ]
        scored = [i for i, r in enumerate(rows) if r["score"] is not None]
        return rows, max(scored, key=lambda i: rows[i]["score"]) if scored else 0
    rows = [evaluate(cfg, path, None, dataset, data_root, split, progress) for path in paths]
    best = max(range(len(rows)), key=lambda i: next(iter(rows[i]["recall_at"].values())))
    return rows, best


def cluster(cfg: Config | None = None, checkpoint=None, backbone=None, dataset=None,
            data_root=None, split: str = "train", index_dir=None, progress=None):  # fmt: skip
    """k-means (``cfg.cluster``; k "auto": one per 50 images) on a model's embeddings of a
    split, or on the stored vectors of an index (``index_dir``; no model). Returns a
    ``clustering.Clustering``: diagnostics, and per image its path, vector and cluster."""
    from udml_cli.clustering import Clustering, auto_clusters, diagnostics, kmeans
    from udml_cli.data.layout import read_split
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError, note
    from udml_cli.inference import embed_split, model_and_dataset

    cfg = cfg if cfg is not None else load_config()
    if index_dir is not None:
        if checkpoint or backbone or dataset:
            raise UsageError(
                "--index clusters stored vectors: leave out --checkpoint/--backbone/--dataset"
            )
        from udml_cli.index import Index

        idx = Index.load(Path(index_dir))
        x, truth, paths = idx.vectors, None, idx.paths
        where = {"dataset": str(index_dir), "split": "index"}
    else:
        model, cfg, ref = model_and_dataset(cfg, checkpoint, backbone, dataset, data_root)
        k = cfg.cluster.num_clusters
        samples = read_split(ref, split)
        if k != "auto" and k > len(samples):
            raise UsageError(f"--k {k} exceeds the {len(samples)} images of {ref.name}/{split}")
        kept: list = []
        x, truth = embed_split(model, cfg, ref, split, resolve_engine(cfg.engine, inference=True),
                              progress, kept)  # fmt: skip
        paths = [s.rel for s in kept]
        truth = truth if ref.labelled else None  # an unlabelled collection: sizes, objective
        where = {"dataset": ref.name, "split": split}
    c = cfg.cluster
    if c.num_clusters == "auto":
        c.num_clusters = auto_clusters(len(x), 2)
        note(f"--k not given: {c.num_clusters} clusters (one per 50 images)")
    if c.num_clusters > len(x):
        raise UsageError(f"--k {c.num_clusters} exceeds the {len(x)} readable images")
    result = kmeans(x, c.num_clusters, c.niter, c.seed, c.init, n_init=c.n_init)
    diag = diagnostics(result.labels, c.num_clusters, result.objective, truth)
    diag.update(**where, images=len(x))
    return Clustering(diag, paths, x, result)


def run_summary(out: str | Path) -> dict:
    """What a run's metrics.jsonl says at the end: epochs, steps, training seconds, the last
    epoch's mean loss, the last step's loss parts, the first and last evaluation, and the
    label-free score of every evaluation."""
    from udml_cli.runs import read_metrics, run_losses

    records = read_metrics(Path(out))

    def having(event: str, *keys: str) -> list[dict]:  # a damaged record is left out
        return [r for r in records if r["event"] == event and all(k in r for k in keys)]

    epochs = having("epoch_summary", "completed", "seconds", "mean_loss")
    steps = having("step")
    evals = having("eval", "recall_at", "dataset", "split")
    free = [(r["epoch"], r["label_free"]["score"]) for r in having("eval", "label_free")
            if isinstance(r["label_free"], dict) and r["label_free"].get("score") is not None]  # fmt: skip
    last_step = steps[-1] if steps else {}
    return {
        "epochs": epochs[-1]["completed"] if epochs else 0,
        "steps": records[-1]["step"] if records else 0,
        "seconds": round(sum(r["seconds"] for r in epochs), 1),
        "mean_loss": epochs[-1]["mean_loss"] if epochs else None,
        "last_step": {k: last_step[k] for k in run_losses(Path(out)) if k in last_step},
        "start": evals[0] if evals and evals[0]["step"] == 0 else None,
        "end": evals[-1] if evals and evals[-1]["step"] > 0 else None,
        "label_free": free,  # (epoch, score) of every evaluation: the start is epoch 0
    }


def build_index(folder: str | Path, out: str | Path, checkpoint=None, backbone=None,
                weights="imagenet", image_size=None, device="auto", strict=False, progress=None,
                *, replace: bool = False, ask=None, calibrate: bool = True,
                precision: float | None = None, hashes: bool = True):  # fmt: skip
    """Embed ``folder`` into the index folder ``out``, one writer at a time (a lock beside it).

    ``out`` new or empty: written. An index of the same folder and model: updated, embedding
    only new or changed files. An index of another folder or model, or a damaged one: replaced
    whole only with ``replace=True`` or when ``ask(question, refuse)`` says yes (it raises to
    refuse; no ``ask``: refused). A folder that is not a udml index: always refused. The new
    index replaces the old in one step once it is complete (see ``udml_cli.index``)."""
    import contextlib

    from udml_cli.errors import DatasetError, UsageError, quiet_rank
    from udml_cli.fileio import ensure_writable_dir
    from udml_cli.index import Index, index_state, model_identity, plan_update, refuse_foreign
    from udml_cli.runs import RunLock

    folder, out = Path(folder).expanduser().resolve(), Path(out).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    ensure_writable_dir(out, "--out")
    refuse_foreign(out)  # a folder that is not an index: refused before the model loads
    writer = not quiet_rank()  # under --nproc, rank 0 locks and writes; every rank embeds
    with RunLock(out, "udml index") if writer else contextlib.nullcontext():
        state, old = index_state(out)
        model, cfg = load_model(checkpoint, backbone, weights, image_size, device)
        ident = model_identity(Path(checkpoint) if checkpoint else None, cfg)
        why = _replacing(state, old, folder, ident, model.dim)
        if why and not replace:
            refuse = f"{out} {why}; pass --yes to replace it"
            if ask is None:
                raise UsageError(refuse)
            ask(f"{out} {why}. Replace it with an index of {folder}?", refuse)
        old = old if state == "index" and not why else None
        files, reuse, todo = plan_update(old, folder, ident)
        dim = model.dim
        vectors = np.zeros((len(files), dim), np.float32)
        for pos, row in reuse.items():
            vectors[pos] = old.vectors[row]
        keep = np.ones(len(files), bool)
        if todo:
            paths = [files[p][3] for p in todo]
            x, ok = embed_files(model, cfg, paths, strict, progress, folder.name,
                                none_ok=bool(reuse))  # fmt: skip
            todo_arr = np.array(todo)
            vectors[todo_arr[ok]] = x
            keep[todo_arr[~ok]] = False
        rows = [(r, s, m) for (r, s, m, _), k in zip(files, keep.tolist(), strict=True) if k]
        codes = None
        if hashes and writer:
            from udml_cli.phash import file_hashes

            codes = np.zeros(len(files), np.uint64)
            reused = reuse if old is not None and old.hashes is not None else {}
            for pos, row in reused.items():  # unchanged files keep their hashes
                codes[pos] = old.hashes[row]
            need = [p for p in range(len(files)) if keep[p] and p not in reused]
            codes[need] = file_hashes([files[p][3] for p in need], progress, folder.name)
            codes = codes[keep]
        calibration, fresh = None, False
        if calibrate:
            from udml_cli.calibration import DEFAULT_PRECISION
            from udml_cli.calibration import calibrate as run_calibration

            precision = DEFAULT_PRECISION if precision is None else precision
            kept = old.calibration if old is not None else None
            if kept is not None and kept.get("precision") == precision:
                calibration = kept
            else:
                calibration = run_calibration(model, cfg, vectors[keep], [folder / r[0] for r in rows],
                                              precision, progress).to_dict()  # fmt: skip
                fresh = True
        index = Index(folder, ident, vectors[keep], rows, calibration=calibration, hashes=codes)
        if writer:
            index.save(out)
    index.embedded, index.kept = len(todo) - int((~keep).sum()), len(reuse)
    index.calibrated = fresh
    return index


def _replacing(state: str, old, folder: Path, ident: dict, dim: int) -> str:
    """Why writing an index of ``folder`` with ``ident`` into ``out`` would replace it ('' when
    it would not: a new folder, or the same folder and model)."""
    if state == "damaged":
        return f"holds a udml index that does not load ({old})"
    if state == "new":
        return ""
    if old.folder != folder:
        return f"is an index of another folder ({old.folder}, {len(old.files)} images)"
    if old.model != ident:
        return "is an index made with another model (every image would be embedded again)"
    if old.dim != dim:
        return f"holds {old.dim}-d vectors, not the {dim}-d ones its model gives"
    return ""
