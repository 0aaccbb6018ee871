"""The one configuration model every command shares.

Defaults are the official UDML-SS recipe for CUB (design.md §1). Values come, in increasing
priority, from: the defaults, a TOML file (``--config``), the few common flags, ``--set key=value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from udml_cli.errors import ConfigError


class _Section(BaseModel):
    # every float must be finite (lr = inf, alpha = nan are refused); ranges are on the fields
    # strict: a value of the wrong type (true for a number, "5" for an int) is refused, not coerced
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True
    )


SEED = Field(0, ge=0, le=2**31 - 1, description="random seed")
BIG = 10**7  # a generous upper bound for counts: a typo, not a recipe, goes above it


class DataConfig(_Section):
    dataset: str | None = Field(None, description="registered name, built-in name or layout path")
    data_root: str | None = Field(None, description="root of the built-in datasets (cub, car, sop)")
    image_size: int = Field(227, ge=8, le=4096, description="crop size fed to the network")
    resize: int = Field(256, ge=8, le=8192, description="shorter side before cropping")
    crop_scale_min: float = Field(0.16, gt=0, le=1, description="RandomResizedCrop lower scale")
    flip: bool = Field(True, description="random horizontal flip while training")
    cache: bool = Field(False, description="keep decoded, resized images in memory")
    strict: bool = Field(
        False, description="stop on an unreadable image instead of skipping and listing it"
    )
    eval_dataset: str | None = Field(
        None,
        description="labelled dataset to evaluate on during and after training (default: the "
        "training dataset's test split, when it has one)",
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.image_size > self.resize:
            raise ValueError(f"data.image_size ({self.image_size}) > data.resize ({self.resize})")
        return self


_Grid = Annotated[int, Field(ge=1, le=8)]  # regions a side (1: the whole map)


class ModelConfig(_Section):
    backbone: str = Field("googlenet", description="backbone name (see `udml eval --help`)")
    weights: str = Field("imagenet", description="'imagenet', 'none' or a local .pth path")
    dim: Annotated[int, Field(ge=2, le=65536)] | Literal["auto"] = Field(
        512,
        description="embedding size; auto: the descriptor's size (what head_init = identity "
        "needs, whatever model.layers gives)",
    )
    freeze_bn: bool = Field(True, description="BatchNorm in eval mode while training (paper)")
    dropout: bool = Field(
        False,
        description="keep the backbone's dropout / stochastic depth active while training "
        "(off: the paper's network has none)",
    )
    freeze_backbone: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of the backbone's parameter tensors, from the input side, kept fixed "
        "while training (0: train all, the paper; 1: train the heads only)",
    )
    pool: Literal["avg", "gem"] = Field(
        "avg",
        description="global pooling of each pooled stage: avg, or gem (generalised mean, a "
        "learnable exponent starting at 3)",
    )
    layers: list[str] = Field(
        ["last"],
        min_length=1,
        max_length=16,
        description="stages pooled into the descriptor, each L2-normalised, concatenated: "
        "'last' (the final feature) and/or the backbone's stages (e.g. 'block10' of "
        "efficientnet_lite0, 'layer3' of resnet50; a wrong name lists them); ['auto']: udml "
        "train picks the stage with the highest label-free score on the training images; "
        "['all']: every stage the backbone names (not 'last')",
    )
    auto_images: int = Field(
        2000, ge=2, le=BIG,
        description="training images (each with one edited copy) scored per stage when "
        "model.layers = ['auto'] picks one, and by `udml eval --label-free --each-layer`: more "
        "steady the pick (stages often score within 0.5 of each other), at one pass over them "
        "and their copies; eval.label_free sets the sample of every evaluation",
    )  # fmt: skip
    grid: _Grid | Annotated[list[_Grid], Field(min_length=1, max_length=4)] = Field(
        1,
        description="pool each stage of model.layers over a grid x grid of regions (layout "
        "counts, as in raw pixels; 'last' stays global); 1: the whole map; a list pools each "
        "stage at each of those grids, each part L2-normalised (a pyramid: [1, 4] = the whole "
        "map and a 4x4 grid)",
    )  # fmt: skip
    head_init: Literal["random", "pca", "whiten", "identity", "orthogonal"] = Field(
        "random",
        description="embedding head init: random (paper), PCA of the start features, whiten "
        "(their PCA-whitening, learned on the training images without labels), identity "
        "(needs dim = backbone feature size: training starts exactly at the pretrained metric), "
        "or orthogonal with zero bias (STML's code)",
    )

    @model_validator(mode="after")
    def _layers_once(self) -> ModelConfig:
        if "auto" in self.layers and self.layers != ["auto"]:
            raise ValueError("model.layers: 'auto' stands alone (udml train picks one stage)")
        if "all" in self.layers and self.layers != ["all"]:
            raise ValueError("model.layers: 'all' stands alone (it names every stage already)")
        if isinstance(self.grid, list) and len(set(self.grid)) < len(self.grid):
            raise ValueError(f"model.grid {self.grid} names a grid twice; name each once")
        twice = sorted({x for x in self.layers if self.layers.count(x) > 1})
        if twice:
            raise ValueError(f"model.layers names {twice[0]!r} twice; name each stage once")
        return self


class LossConfig(_Section):
    alpha: float = Field(40.0, gt=0, le=1000, description="Weight loss scale on negatives")
    beta: float = Field(2.0, gt=0, le=1000, description="Weight loss scale on positives")
    base: float = Field(0.5, ge=-1, le=1, description="similarity offset")
    margin: float = Field(0.1, ge=0, le=2, description="hard-mining margin")
    metric_weight: float = Field(
        1.0, ge=0, description="weight of the Weight loss (0: rotation only)"
    )
    rot_weight: float = Field(0.1, ge=0, description="lambda of the rotation loss (0: plain UDML)")
    rot_batch: int = Field(16, ge=0, le=4096, description="images of each batch rotated 4 ways")


class ClusterConfig(_Section):
    num_clusters: Annotated[int, Field(ge=2, le=BIG)] | Literal["auto"] = Field(
        "auto",
        description="k of k-means = number of pseudo-classes; auto: one per 50 training images "
        "(at least a batch's worth, at most 10,000); the paper templates give theirs",
    )

    niter: int = Field(20, ge=1, le=10000, description="k-means iterations")
    init: Literal["kmeans++", "random"] = "kmeans++"
    n_init: int = Field(
        1, ge=1, le=1000, description="fresh inits, best objective kept (not for warm starts)"
    )
    warm_start: bool = Field(True, description="start each re-clustering from the last centroids")
    warm_tol: float = Field(
        1e-4, ge=0, le=1,
        description="a warm-started re-clustering stops once an iteration lowers the objective by "
        "less than this fraction (at most cluster.niter iterations; 0: exactly cluster.niter "
        "iterations in faiss, the earlier behaviour)",
    )  # fmt: skip
    feature: Literal["embedding", "backbone", "backbone-raw"] = Field(
        "embedding",
        description="which feature is clustered: the embedding, the L2-normalised pooled backbone "
        "feature, or the raw pooled feature",
    )
    first_feature: Literal["same", "embedding", "backbone", "backbone-raw"] = Field(
        "same",
        description="the feature of a fresh run's first clustering ('same': as cluster.feature; "
        "the paper: backbone-raw, the pretrained pool5 feature)",
    )
    seed: int = SEED


class TrainConfig(_Section):
    method: str = Field(
        "udml-ss",
        description="udml-ss: k-means pseudo-labels, Weight + rotation loss (the paper); stml: "
        "self-taught metric learning (EMA teacher, contextual similarity; the [stml] section); "
        "invariance: edited views of each image pulled together, NT-Xent (the [invariance] "
        "section); any method registered in udml_cli/methods or by a plug-in",
    )
    optimizer: Literal["adam", "adamp"] = Field(
        "adam", description="adam (UDML-SS) or adamp (AdamP with Nesterov, STML's code)"
    )
    schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="learning rates: constant, or cosine-annealed over train.epochs (a --resume "
        "with other --epochs reshapes the rest of the curve)",
    )
    epochs: int = Field(600, ge=1, le=BIG)
    batch_size: int = Field(80, ge=2, le=65536, description="P x K images per batch")
    instances: int = Field(5, ge=2, le=4096, description="K: images per cluster in a batch")
    iters_per_epoch: int | None = Field(
        None, ge=1, le=BIG, description="default: num_clusters * instances / batch_size (official)"
    )
    lr: float = Field(1e-5, gt=0, le=10, description="backbone learning rate")
    head_lr: float = Field(1e-5, gt=0, le=10, description="embedding head learning rate")
    rot_lr: float = Field(1e-5, gt=0, le=10, description="rotation head learning rate")
    weight_decay: float = Field(5e-4, ge=0, le=10)
    up_step: int = Field(
        5, ge=1, le=BIG, description="re-cluster (stml: find the neighbours again) every N epochs"
    )
    save_step: int = Field(50, ge=1, le=BIG, description="checkpoint every N epochs")
    eval_step: int = Field(
        0, ge=0, le=BIG, description="evaluate on the test split every N epochs (0: off)"
    )
    log_every: int = Field(
        10, ge=1, le=BIG,
        description="write a step record to metrics.jsonl every N iterations, and at the last",
    )  # fmt: skip
    final_eval: bool = Field(
        True, description="evaluate the start and the end on a labelled test split, if any"
    )
    log: list[Literal["jsonl", "tensorboard"]] = Field(
        ["jsonl"],
        min_length=1,
        description="where the run's records go: jsonl (RUN/metrics.jsonl, always) and "
        "tensorboard (RUN/tensorboard/: scalars and, at each evaluation, the embedding "
        "projector; needs the tensorboard package)",
    )
    feature_cache: int = Field(
        0, ge=0, le=64,
        description="with model.freeze_backbone = 1: compute the backbone's features of N "
        "augmented views of every training image once (RUN/feature_cache/) and train the "
        "heads on them, many more steps per minute; 0: run the backbone every step",
    )  # fmt: skip
    full_epoch_checkpoints: bool = Field(
        False,
        description="epoch_NNNN.pt files keep the optimiser and cluster state too (last.pt always "
        "does); off, they hold what eval/embed need",
    )
    seed: int = SEED

    @model_validator(mode="after")
    def _jsonl_always(self) -> TrainConfig:
        if "jsonl" not in self.log:
            raise ValueError("train.log always holds \"jsonl\" (metrics.jsonl is what resume, "
                             "report and eval read); add tensorboard beside it")  # fmt: skip
        return self


class StmlConfig(_Section):
    """STML (Kim et al., CVPR 2022), used with train.method = "stml"; defaults: its CUB recipe."""

    sigma: float = Field(3.0, gt=0, le=1e4, description="teacher similarity exp(-d^2 / sigma)")
    delta: float = Field(1.0, gt=0, le=100, description="margin of the relaxed contrastive push")
    neighbors: int = Field(
        5, ge=1, le=1000,
        description="images per query in a batch: the query and its nearest neighbours in the "
        "student's g embedding; the contextual similarity uses neighbors x views",
    )  # fmt: skip
    views: int = Field(2, ge=1, le=16, description="augmented views of every image in a batch")
    momentum: float = Field(0.999, ge=0, lt=1, description="EMA momentum of the teacher")
    aux_dim: int = Field(
        1024, ge=2, le=65536, description="size of the g embedding the teacher gives targets in"
    )


class InvarianceConfig(_Section):
    """The invariance method (train.method = "invariance"): each image in several edited views
    (crops, flips, colour, greyscale, blur, small rotations, JPEG), views of one image pulled
    together against every other image of the batch (NT-Xent, SimCLR), optionally SSCD's
    entropy regulariser and the UDML-SS Weight loss on k-means pseudo-classes ([loss] α β base
    margin, [cluster], train.instances) in one weighted sum."""

    views: int = Field(2, ge=2, le=16, description="edited views of every image in a batch")
    temperature: float = Field(
        0.1, gt=0, le=10, description="NT-Xent temperature (similarities are divided by it)"
    )
    nce_weight: float = Field(1.0, ge=0, le=1000, description="weight of the NT-Xent loss")
    entropy_weight: float = Field(
        0.0, ge=0, le=1000,
        description="weight of SSCD's differential-entropy regulariser (spreads the embeddings; "
        "SSCD uses 30 at temperature 0.05); 0: off",
    )  # fmt: skip
    cluster_weight: float = Field(
        0.0, ge=0, le=1000,
        description="weight of the UDML-SS Weight loss on k-means pseudo-classes (P x K batches "
        "from [cluster], re-clustered every train.up_step epochs); 0: off, no k-means",
    )  # fmt: skip
    edits: Literal["copies", "train"] = Field(
        "copies",
        description="how views are made: copies (the edits real copies carry: crop, flip, "
        "colour, greyscale, blur, rotation, JPEG) or train (data.crop_scale_min crop + flip)",
    )


class EvalConfig(_Section):
    split: Literal["train", "test"] = "test"
    recall_at: list[Annotated[int, Field(ge=1, le=BIG)]] = Field(
        [1, 2, 4, 8, 16, 32], min_length=1, max_length=64
    )
    batch_size: int = Field(
        128, ge=1, le=65536, description="images per forward pass when extracting"
    )
    label_free: int = Field(
        500, ge=0, le=BIG,
        description="training images scored label-free at each evaluation (retrieval of an "
        "edited copy of each, neighbourhoods kept: udml_cli/selection.py); 0: off",
    )  # fmt: skip


class EngineConfig(_Section):
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere"
    )
    workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes (0: load in the main process)"
    )
    threads: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        "auto",
        description="CPU threads for the network's math (torch intra-op); auto: every core on an "
        "idle machine; when other processes are busy at the start, the cores they leave free "
        "less one per DataLoader worker",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="channels-last memory layout; auto: on a GPU, and on the CPU for commands "
        "that only embed (eval, embed, index, search, cluster, serve, report)",
    )
    deterministic: bool = Field(False, description="deterministic torch algorithms")


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    cluster: ClusterConfig = ClusterConfig()
    train: TrainConfig = TrainConfig()
    stml: StmlConfig = StmlConfig()
    invariance: InvarianceConfig = InvarianceConfig()
    eval: EvalConfig = EvalConfig()
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="after")
    def _trainable(self) -> Config:
        """What no data can make right, as the training method sees it (the data's checks:
        the method's ``check_data``)."""
        from udml_cli.methods import method_class

        kind = method_class(self.train.method)
        if self.train.feature_cache:
            m = self.model
            why = (
                "model.freeze_backbone = 1" if m.freeze_backbone < 1 else
                "model.freeze_bn = true" if not m.freeze_bn else
                "model.dropout = false" if m.dropout else None
            )  # fmt: skip
            if why:
                raise ValueError(f"train.feature_cache needs {why} (cached features must be "
                                 "what the backbone gives at every step)")  # fmt: skip
            if not kind.feature_cache:
                raise ValueError(f"train.method = {kind.name} does not train on cached features; "
                                 "set train.feature_cache = 0")  # fmt: skip
        kind.check_config(self)
        return self

    def to_toml(self) -> str:
        """The config as TOML, with the settings of this run's method and none of another's."""
        import tomli_w

        from udml_cli.methods import all_methods, method_class

        tree = self.model_dump(mode="json", exclude_none=True)
        own = method_class(self.train.method).sections
        for other in all_methods():
            for section, keys in other.sections.items():
                mine = own.get(section, set())
                if mine is None or section not in tree:
                    continue  # the whole section is this method's too
                for key in (set(tree[section]) if keys is None else keys) - mine:
                    tree[section].pop(key, None)
                if not tree[section]:
                    del tree[section]
        return tomli_w.dumps(tree)


def _parse_value(raw: str) -> Any:
    """A TOML literal if it is one (1e-3, true, [1, 2], "x"), else the raw string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _format_error(err: ValidationError, source: str) -> str:
    errors = err.errors()
    first = errors[0]

    def wrong_branch(e) -> bool:  # a union's branch the value's type cannot be at all
        return len(e["loc"]) == 3 and e["type"] in ("int_type", "literal_error", "list_type")

    if wrong_branch(first):  # (an int or a list, a number or "auto"): the branch it matched
        same = [e for e in errors[1:] if e["loc"][:2] == first["loc"][:2] and not wrong_branch(e)]
        first = same[0] if same else first
    # section.key, then list indexes; pydantic's union-branch tags (constrained-int …) dropped
    loc = first["loc"]
    key = ".".join([str(p) for p in loc[:2]] + [str(p) for p in loc[2:] if isinstance(p, int)])
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        section = first["loc"][0] if len(first["loc"]) > 1 else None
        valid = (
            Config.model_fields[section].annotation.model_fields
            if section in Config.model_fields
            else Config.model_fields
        )
        msg += f" (valid: {', '.join(valid)})"
    elif first["type"] == "value_error" and "error" in first.get("ctx", {}):
        msg = str(first["ctx"]["error"])  # our own validators name their keys
        key = ""
    else:
        msg = first["msg"]
        if "input" in first and not isinstance(first["input"], dict):
            msg += f", got {first['input']!r}"
    where = f"{source}: " if source else ""
    return f"{where}{key}: {msg}" if key else f"{where}{msg}"


def _set_dotted(tree: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{source}: '{key}' must look like section.key (e.g. train.lr)")
    section, name = parts
    node = tree.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{source}: '{section}' is not a section")
    node[name] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    base: dict | None = None,
) -> Config:
    """Defaults < ``base`` (a checkpoint's config) or TOML file < flags (dotted keys, None = not
    given) < ``--set`` overrides."""
    import copy

    tree: dict[str, Any] = copy.deepcopy(base) if base else {}
    source = ""
    if path is not None:
        from udml_cli.recipes import resolve_config_path

        path = resolve_config_path(path)
        source = str(path)
        try:
            # a resume's base (the run's config) with the file's keys on top
            for section, values in tomllib.loads(read_config_text(path)).items():
                if isinstance(values, dict) and isinstance(tree.get(section), dict):
                    tree[section].update(values)
                else:
                    tree[section] = values
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(tree, key, value, "option")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected section.key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), _parse_value(raw.strip()), "--set")
        source = "--set" if path is None else f"{path} + --set"
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


MAX_CONFIG_BYTES = 1 << 20  # a run config is a few hundred bytes; a megabyte is a mistake


def read_config_text(path: Path) -> str:
    """A config file's text: a regular file (not a device, pipe or folder) of at most a MB."""
    import os
    import stat

    def regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"config file {path} is not a regular file (a device, pipe or folder)"
            )

    regular(os.stat(path).st_mode)  # before opening: opening a pipe would wait for a writer
    with open(path, "rb") as fh:
        regular(os.fstat(fh.fileno()).st_mode)
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than 1 MB: not a udml run config")
    return data.decode("utf-8")


def config_from_dict(tree: dict) -> Config:
    """Rebuild a config stored inside a checkpoint."""
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, "checkpoint config")) from None


def image_size_keys(image_size: int) -> dict[str, int]:
    """``--image-size N`` as config keys: crop N after resizing the shorter side to N·256/227 (the
    paper's ratio)."""
    return {
        "data.image_size": image_size,
        "data.resize": max(image_size, round(image_size * 256 / 227)),
    }


def model_flags(backbone=None, weights=None, device=None, image_size=None, **dotted) -> dict:
    """The common flags (``--backbone``, ``--weights``, ``--device``, ``--image-size``) as dotted
    config keys, the one place they are mapped (None: not given). ``--image-size N`` crops N
    after resizing the shorter side to N·256/227 (the paper's ratio)."""
    flags = {"model.backbone": backbone, "model.weights": weights, "engine.device": device}
    if image_size is not None:
        flags |= image_size_keys(image_size)
    return flags | dotted
