"""params.yaml → frozen, typed dataclasses. An unknown or mistyped key is an error.

A typo such as `train.batch_szie: 64` must fail loudly instead of silently training
with the default; every stage loads through `load()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import struct
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from losstrace.errors import LosstraceError


@dataclass(frozen=True)
class BaseParams:
    seed: int = 42

    def __post_init__(self) -> None:
        _at_least(0, "42", {"base.seed": self.seed})  # numpy seeds are non-negative


@dataclass(frozen=True)
class DataParams:
    source: str = "japanese_vowels"
    format: str = "auto"  # auto|csv|tsv|parquet|npz
    input: str = "auto"  # auto|text|tokens|numeric
    text_column: str = "text"
    label_column: str = "label"
    header: bool = True
    shuffle: bool = True
    multilabel: bool = False
    label_delimiter: str = "|"
    val_size: float = 0.2
    test_size: float = 0.2
    # Rows with one input stay in one split: a short sentence repeated in a source would
    # otherwise land in train and val, the leakage validate stops on. false = the plain
    # stratified split (rows split independently), to reproduce an older split.
    group_duplicates: bool = True
    on_bad_rows: str = "fail"  # fail|skip
    text_level: str = "word"  # word|char
    max_tokens: int = 20000
    max_len: int = 0  # 0 = longest training sequence
    # The file or folder DVC watches for data.source (dvc.yaml templates it into ingest's
    # deps): a user file itself, or the folder holding a glob's matches. Bundled datasets
    # come out of packages pinned in requirements.lock, so the lock file is their dep.
    source_dep: str = "requirements.lock"
    val_source: str = ""  # user file(s) holding the validation rows; "" = split them off train
    padding: str = "post"  # post|pre: which end of a short sequence gets the padding
    standardize: bool = True  # numeric inputs: scale each channel by the train mean and std

    def __post_init__(self) -> None:
        _choice("data.format", self.format, ("auto", "csv", "tsv", "parquet", "npz"))
        _choice("data.padding", self.padding, ("post", "pre"))
        _choice("data.input", self.input, ("auto", "text", "tokens", "numeric"))
        _choice("data.on_bad_rows", self.on_bad_rows, ("fail", "skip"))
        _choice("data.text_level", self.text_level, ("word", "char"))
        for key, v in (("data.val_size", self.val_size), ("data.test_size", self.test_size)):
            if not 0.0 < v < 0.5:
                raise LosstraceError("params.yaml", f"{key}={v} is outside (0, 0.5)", f"set {key} to e.g. 0.2")
        # two ids are reserved (padding, out-of-vocabulary): 3 keeps one real token
        _at_least(3, "20000", {"data.max_tokens": self.max_tokens})
        _at_least(0, "0 (the longest training sequence)", {"data.max_len": self.max_len})


@dataclass(frozen=True)
class ValidateParams:
    max_class_ratio: float = 4.0
    # Label-order check: a Wald–Wolfowitz-style runs z-score below this flags grouped rows.
    order_z_threshold: float = -3.0
    allow_label_change: bool = False
    max_duplicate_rate: float = 0.05
    max_leakage_rate: float = 0.0
    max_truncation_rate: float = 0.05
    max_oov_rate: float = 0.2

    def __post_init__(self) -> None:
        _at_least(1, "4.0", {"validate.max_class_ratio": self.max_class_ratio})
        for name in ("max_duplicate_rate", "max_leakage_rate", "max_truncation_rate", "max_oov_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise LosstraceError(
                    "params.yaml",
                    f"validate.{name}={v:g} is a share of rows, outside [0, 1]",
                    f"set validate.{name} to e.g. 0.05",
                )


@dataclass(frozen=True)
class EmbeddingParams:
    dim: int = 64
    trainable: bool = True
    pretrained: str = ""  # path to word2vec/GloVe text vectors, "" = none
    mask_zero: bool = True

    def __post_init__(self) -> None:
        _at_least(1, "64", {"train.model.embedding.dim": self.dim})


@dataclass(frozen=True)
class RnnParams:
    cell: str = "lstm"  # lstm|gru|simple
    units: int = 64
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    return_sequences: bool = False  # of the last layer; inner layers always return sequences
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    unroll: bool = False
    use_bias: bool = True
    reset_after: bool = True  # GRU only

    def __post_init__(self) -> None:
        _choice("train.model.rnn.cell", self.cell, ("lstm", "gru", "simple"))
        _at_least(1, "64", {"train.model.rnn.units": self.units})
        # 0 layers = the feed-forward baseline (embedding → pooling → dense) users compare against.
        _at_least(0, "1 (0: no recurrent layer)", {"train.model.rnn.layers": self.layers})
        for key, v in (("dropout", self.dropout), ("recurrent_dropout", self.recurrent_dropout)):
            if not 0.0 <= v < 1.0:
                raise LosstraceError("params.yaml", f"train.model.rnn.{key}={v} is outside [0, 1)", "use e.g. 0.2")


@dataclass(frozen=True)
class ConvParams:
    filters: int = 0  # 0 = no Conv1D after the recurrent stack
    kernel_size: int = 3

    def __post_init__(self) -> None:
        if self.filters < 0 or self.kernel_size < 1:
            raise LosstraceError(
                "params.yaml",
                "train.model.conv.filters must be >= 0 and .kernel_size >= 1",
                "e.g. filters: 64, kernel_size: 3 (filters: 0 = no Conv1D)",
            )


@dataclass(frozen=True)
class DenseParams:
    units: int = 64
    activation: str = "relu"  # "" or linear = no activation
    l2: float = 0.0

    def __post_init__(self) -> None:
        if self.units < 1 or self.l2 < 0:
            raise LosstraceError(
                "params.yaml",
                f"train.model.dense: units={self.units}, l2={self.l2:g} need units >= 1 and l2 >= 0",
                "e.g. {units: 64, activation: relu, l2: 0.0}",
            )


_BUILDER_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ModelParams:
    embedding: EmbeddingParams = field(default_factory=EmbeddingParams)
    rnn: RnnParams = field(default_factory=RnnParams)
    conv: ConvParams = field(default_factory=ConvParams)
    pooling: str = "last"  # last|max|avg|avg_max
    dropout: float = 0.0  # after pooling
    dense: tuple[DenseParams, ...] = ()
    # "package.module:function" in the project returning a Keras model (model/builder.py);
    # "" = the zoo above builds from these params.
    builder: str = ""
    # The file or folder DVC watches for the builder's code (dvc.yaml templates it into
    # train's deps); the zoo's own file when there is no builder.
    builder_dep: str = "src/losstrace/model/zoo.py"

    def __post_init__(self) -> None:
        _choice("train.model.pooling", self.pooling, ("last", "max", "avg", "avg_max"))
        if not 0.0 <= self.dropout < 1.0:
            raise LosstraceError("params.yaml", f"train.model.dropout={self.dropout} is outside [0, 1)", "use e.g. 0.3")
        if self.builder and not _BUILDER_RE.fullmatch(self.builder):
            raise LosstraceError(
                "params.yaml",
                f"train.model.builder={self.builder!r} is not package.module:function",
                "e.g. train.model.builder: my_models.gru:build (a function in my_models/gru.py)",
            )
        if self.pooling == "last" and not self.builder:
            self._check_last_pooling()

    def _check_last_pooling(self) -> None:
        """`last` hands the recurrent layer's final state to the head; anything that leaves
        a sequence instead would give the Dense head a 3-D input and a per-step output."""
        fix = "set train.model.pooling: max, avg or avg_max"
        if self.rnn.layers == 0:
            raise LosstraceError(
                "params.yaml",
                "train.model.pooling=last needs a recurrent layer, but "
                "train.model.rnn.layers=0 (feed-forward baseline)",
                fix,
            )
        if self.conv.filters > 0:
            raise LosstraceError(
                "params.yaml",
                "train.model.pooling=last cannot reduce the Conv1D output sequence "
                f"(train.model.conv.filters={self.conv.filters})",
                fix,
            )
        if self.rnn.return_sequences:
            raise LosstraceError(
                "params.yaml",
                "train.model.rnn.return_sequences=true with pooling=last leaves a sequence for the dense head",
                f"{fix}, or train.model.rnn.return_sequences: false",
            )


@dataclass(frozen=True)
class CallbackParams:
    early_stopping: bool = False
    monitor: str = "val_loss"
    patience: int = 5
    # "" = keep the last epoch's weights; a monitor (e.g. val_loss) = restore the best epoch's
    # weights on it after training, whether or not early stopping ended the run.
    checkpoint_monitor: str = ""

    def __post_init__(self) -> None:
        _at_least(0, "5", {"train.callbacks.patience": self.patience})


@dataclass(frozen=True)
class TrackingParams:
    # false: an unreachable tracking server fails the train stage before training (nothing
    # trains unrecorded). true: train anyway, keep every record in reports/train and upload
    # them later with `losstrace sync` (CI runners, laptops on a train).
    offline_ok: bool = False


# Keras metrics the zoo can build (log names are the same, val_ prefixed on validation).
METRICS = ("accuracy", "auc", "precision", "recall")
# Metrics that compare y_true and y_pred element-wise: they need one-hot, multi-hot or
# binary labels shaped like the output, never the integer ids of sparse_categorical_crossentropy.
ONE_HOT_METRICS = ("auc", "precision", "recall")


@dataclass(frozen=True)
class TrainParams:
    model: ModelParams = field(default_factory=ModelParams)
    batch_size: int = 32
    epochs: int = 30
    optimizer: str = "adam"  # adam|rmsprop|sgd|adamw
    learning_rate: float = 0.001
    momentum: float = 0.0
    nesterov: bool = False
    lr_schedule: str = "constant"  # constant|plateau|cosine
    clipnorm: float = 0.0
    loss: str = "sparse_categorical_crossentropy"
    output_activation: str = "softmax"  # softmax|sigmoid|linear
    from_logits: bool = False
    output_units: int = 0  # 0 = number of classes (1 for binary sigmoid)
    class_weight: str = "none"  # none|balanced
    metrics: tuple[str, ...] = ("accuracy",)
    callbacks: CallbackParams = field(default_factory=CallbackParams)
    device: str = "auto"  # auto|cpu|gpu
    shuffle: bool = True  # reshuffle training rows every epoch (false = file order, as a bare tf.data pipeline)
    on_lint_error: str = "stop"  # stop|continue; continue reproduces a known mistake on purpose
    # Per epoch, each layer's gradient norm over the training steps and weight-update ratio:
    # vanishing/exploding gradients and a mis-scaled learning rate show there first.
    dynamics: bool = True
    # Every this many steps, the gradient noise scale B_simple (McCandlish et al. 2018) from
    # the step's batch split in two: the batch size past which a larger one stops paying.
    # 0 = off. Costs one extra forward and backward pass over a batch per measurement.
    noise_scale_every: int = 0
    # pad_to_max|bucket. bucket batches rows of similar length, each padded only to its own
    # longest row: recurrent steps over padding are wasted work on varied-length text.
    batching: str = "pad_to_max"
    buckets: int = 8  # length buckets (at training-length quantiles) for batching: bucket
    mixed_precision: bool = False  # mixed_float16 compute; pays off on GPUs with tensor cores
    distribute: str = "none"  # none|mirrored|multi_worker (tf.distribute)
    # Back up every epoch outside DVC's outputs: a killed train stage resumes there, same run.
    resume: bool = True
    tracking: TrackingParams = field(default_factory=TrackingParams)

    def __post_init__(self) -> None:
        _choice("train.optimizer", self.optimizer, ("adam", "rmsprop", "sgd", "adamw"))
        _choice("train.lr_schedule", self.lr_schedule, ("constant", "plateau", "cosine"))
        _choice("train.output_activation", self.output_activation, ("softmax", "sigmoid", "linear"))
        _choice(
            "train.loss",
            self.loss,
            ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"),
        )
        _choice("train.class_weight", self.class_weight, ("none", "balanced"))
        _choice("train.device", self.device, ("auto", "cpu", "gpu"))
        _choice("train.on_lint_error", self.on_lint_error, ("stop", "continue"))
        _choice("train.batching", self.batching, ("pad_to_max", "bucket"))
        _choice("train.distribute", self.distribute, ("none", "mirrored", "multi_worker"))
        _at_least(1, "8", {"train.buckets": self.buckets})
        if self.batching == "bucket" and self.model.conv.filters > 0:
            # The zoo cuts the Conv1D mask at data.max_len, which needs a fixed sequence length.
            raise LosstraceError(
                "params.yaml",
                "train.batching=bucket feeds batches shorter than data.max_len, "
                f"which train.model.conv (filters={self.model.conv.filters}) does not support",
                "set train.batching: pad_to_max, or train.model.conv.filters: 0",
            )
        _at_least(1, "32", {"train.batch_size": self.batch_size, "train.epochs": self.epochs})
        _at_least(0, "0.0 (off) or 1.0", {"train.clipnorm": self.clipnorm, "train.momentum": self.momentum})
        _at_least(0, "0 (the number of classes)", {"train.output_units": self.output_units})
        _at_least(0, "0 (off) or 10", {"train.noise_scale_every": self.noise_scale_every})
        if not self.learning_rate > 0:
            raise LosstraceError(
                "params.yaml", f"train.learning_rate={self.learning_rate} must be > 0", "use e.g. 0.001"
            )
        for name in self.metrics:
            _choice("train.metrics", name, METRICS)
        self._check_monitors()

    def _check_monitors(self) -> None:
        """A monitor Keras cannot find in the epoch logs only warns and then does nothing,
        so early stopping never stops and no best epoch is kept: refuse it here."""
        known = [f"{prefix}{name}" for name in ("loss", *self.metrics) for prefix in ("", "val_")]
        cb = self.callbacks
        for key, monitor, used in (
            ("train.callbacks.monitor", cb.monitor, cb.early_stopping),
            ("train.callbacks.checkpoint_monitor", cb.checkpoint_monitor, bool(cb.checkpoint_monitor)),
        ):
            if used and monitor not in known:
                close = difflib.get_close_matches(monitor, known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise LosstraceError(
                    "params.yaml",
                    f"{key}={monitor!r} is not logged by this model",
                    f"{hint}use one of {', '.join(known)} (metrics come from train.metrics)",
                )


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 256

    def __post_init__(self) -> None:
        _at_least(1, "256", {"evaluate.batch_size": self.batch_size})


@dataclass(frozen=True)
class DiagnoseParams:
    """Thresholds of the curve rules; docs/diagnosis.md explains each."""

    noise_ratio: float = 0.15
    plateau_min_epochs: int = 5
    plateau_rel_change: float = 0.02
    not_learning_rel_drop: float = 0.05
    overfit_rel_rise: float = 0.10
    overfit_min_epochs: int = 3
    explode_factor: float = 10.0
    saturation_share: float = 0.9
    collapse_share: float = 0.9
    # Losses below this share of the initial loss are measured against it, so relative
    # tests (noise, flatness, overfitting rise) do not explode as a curve approaches 0.
    level_floor_share: float = 0.1
    # RMS departure of the epoch train loss from the closest never-increasing curve,
    # relative to its level: epoch-level jitter the optimizer (not batch sampling) makes.
    jitter_ratio: float = 0.04
    # A flat stretch only counts as a plateau when the loss then drops this share below it
    # (a flat tail with no drop afterwards is convergence, not a plateau).
    plateau_drop: float = 0.2
    # A learning rate this many times above/below the optimizer's usual default counts as
    # high/low when naming the likelier driver of noise, plateaus and stuck losses.
    lr_factor: float = 3.0
    # batch_noise * sqrt(batch_size) = the per-sample loss spread sampling alone would need;
    # above this, small batches cannot explain the noise and the optimizer step is suspect.
    sampling_cv_max: float = 3.0

    def __post_init__(self) -> None:
        # Every threshold is a share, a ratio or a count: a negative one would fire on every run.
        for f in dataclasses.fields(self):
            low = 1 if f.type in (int, "int") else 0
            _at_least(low, str(f.default), {f"diagnose.{f.name}": getattr(self, f.name)})


@dataclass(frozen=True)
class CiParams:
    """How far a test metric may fall below the baseline rev before `losstrace ci-report` fails CI."""

    max_accuracy_drop: float = 0.02
    max_macro_f1_drop: float = 0.03

    def __post_init__(self) -> None:
        _at_least(
            0,
            "0.02 (an absolute drop)",
            {"ci.max_accuracy_drop": self.max_accuracy_drop, "ci.max_macro_f1_drop": self.max_macro_f1_drop},
        )


@dataclass(frozen=True)
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    data: DataParams = field(default_factory=DataParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    diagnose: DiagnoseParams = field(default_factory=DiagnoseParams)
    ci: CiParams = field(default_factory=CiParams)

    def __post_init__(self) -> None:
        if self.data.padding == "pre" and self.train.batching == "bucket":
            # A bucket's batch keeps each row's first steps: pre-padded rows start with padding.
            raise LosstraceError(
                "params.yaml",
                "data.padding=pre cannot be cut to a bucket's width (train.batching=bucket keeps the first steps)",
                "set data.padding: post, or train.batching: pad_to_max",
            )


def _at_least(low: float, example: str, values: dict[str, float]) -> None:
    """Each params key in `values` must hold a value >= low."""
    for key, v in values.items():
        if v < low:
            raise LosstraceError("params.yaml", f"{key}={v:g} must be >= {low:g}", f"set {key} to e.g. {example}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise LosstraceError(
            "params.yaml", f"{key}={value!r} is not one of {', '.join(allowed)}", f"set {key} to one of them"
        )


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-05` is a string; DVC writes params.yaml as YAML 1.2
    (`dvc exp run -S train.learning_rate=0.00001` leaves `learning_rate: 1e-05`), where it
    is a float. Read floats the 1.2 way so both mean the same number."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_Yaml12Floats)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise LosstraceError(str(path), "file not found", "run from the project root or pass --params") from None
    except UnicodeDecodeError as e:
        raise LosstraceError(str(path), f"not UTF-8 text (byte {e.start})", "pass the YAML params file") from None
    except IsADirectoryError:
        raise LosstraceError(str(path), "is a directory", "pass the YAML params file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LosstraceError(where, "invalid YAML", "fix the syntax") from None
    if raw is None:  # an empty or all-comment file: most likely truncated, never meant as "all defaults"
        raise LosstraceError(
            str(path),
            "holds no params",
            "restore it (git checkout params.yaml), or write `base: {seed: 42}` to run on the defaults",
        )
    try:
        return from_dict(Params, raw, "")
    except LosstraceError as e:
        if e.where == "params.yaml":
            e.where = str(path)
            e.args = (e.line(),)
        raise


def from_dict(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    where = prefix.rstrip(".") or "<top level>"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LosstraceError(
            "params.yaml", f"{where} must be a mapping, got {type(raw).__name__}", "see the README's params reference"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            fix = f"did you mean {prefix}{close[0]}?" if close else f"valid keys: {', '.join(fields)}"
            raise LosstraceError("params.yaml", f"unknown key {prefix}{key}", fix)
    kwargs = {k: _convert(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """One params.yaml value checked against its field's type (sections recurse)."""
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if value is None:
            return ()
        if not isinstance(value, list):
            value = [value]
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        return value
    check = _SCALAR_CHECKS.get(tp)
    return check(value, key) if check else value


def _as_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise LosstraceError("params.yaml", f"{key}={value!r} must be true or false", f"set {key}: true|false")
    return value


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LosstraceError("params.yaml", f"{key}={value!r} must be an integer", f"set {key} to a whole number")
    return value


def _as_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LosstraceError("params.yaml", f"{key}={value!r} must be a number", f"set {key} to a number")
    if not math.isfinite(value):
        raise LosstraceError(
            "params.yaml",
            f"{key}={value!r} must be a finite number",
            f"set {key} to a number (a large one to switch a check off)",
        )
    return float(value)


def _as_str(value: Any, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise LosstraceError("params.yaml", f"{key}={value!r} must be a string", f"quote the value of {key}")
    return str(value)


_SCALAR_CHECKS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Params → {"train.batch_size": 32, ...} for MLflow and diff."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            out.update(flatten(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    if isinstance(obj, tuple) and obj and dataclasses.is_dataclass(obj[0]):
        for i, item in enumerate(obj):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    key = prefix.rstrip(".")
    out[key] = ",".join(map(str, obj)) if isinstance(obj, tuple) else obj
    return out


def to_nested(obj: Any) -> Any:
    """Params → plain nested dicts/lists, as params.yaml holds them."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_nested(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_nested(v) for v in obj]
    return obj


def from_flat(flat: dict[str, str]) -> Params:
    """Rebuild typed Params from MLflow's flat string params (keys this version does not know are ignored).

    Used to replay a recorded run's configuration (bisect).
    """
    nested: dict[str, Any] = {}
    dense: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        parts = key.split(".")
        if parts[:3] == ["train", "model", "dense"]:
            if len(parts) == 5 and parts[3].isdigit():
                tp = _field_type(DenseParams, [parts[4]])
                if tp is not None:
                    dense.setdefault(int(parts[3]), {})[parts[4]] = _typed(tp, value)
            continue
        tp = _field_type(Params, parts)
        if tp is not None:
            override_nested(nested, {key: _typed(tp, value)})
    if dense:
        nested.setdefault("train", {}).setdefault("model", {})["dense"] = [dense[i] for i in sorted(dense)]
    return from_dict(Params, nested, "")


def _field_type(cls: type, parts: list[str]) -> Any:
    """The annotated type at a dotted path inside a params dataclass, or None if unknown."""
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        tp = hints[part]
        if i == len(parts) - 1:
            return None if dataclasses.is_dataclass(tp) else tp
        if not dataclasses.is_dataclass(tp):
            return None
        cls = tp
    return None


def _typed(tp: Any, value: str) -> Any:
    """A string recorded by MLflow as the field's type wants it (from_dict checks the rest)."""
    if typing.get_origin(tp) is tuple:
        return [v for v in value.split(",") if v]
    if tp is str:
        return value
    parsed = parse_value(value)
    if tp is int and isinstance(parsed, float) and parsed.is_integer():
        return int(parsed)  # "32.0": a whole number some tools write with a decimal point
    return parsed


def parse_value(value: Any) -> Any:
    """A value as text ("0.001", "True", "32", from MLflow or a command line) back to a
    bool, int or float; other text, and what is not text, is returned as it is."""
    if not isinstance(value, str):
        return value
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() and "." not in value and "e" not in low else f


def float32_shortest(value: float) -> float:
    """A float32 setting (Keras holds learning rates as float32 variables) as the number it
    was set from: the shortest decimal that is the same float32, so 1e-4 reads back as
    0.0001, not 9.999999747378752e-05."""

    def as32(x: float) -> bytes:
        return struct.pack("<f", x)

    if not math.isfinite(value):
        return value
    target = as32(value)
    for digits in range(1, 10):  # nine significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        if as32(candidate) == target:
            return candidate
    return value


def override_nested(nested: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys ({"train.batch_size": 8}) in nested params dicts (params.yaml's shape),
    creating missing sections; returns `nested`, changed in place."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def override(p: Params, overrides: dict[str, Any]) -> Params:
    """`p` with dotted keys replaced (`override(p, {"train.batch_size": 8})`), checked as params.yaml is."""
    return from_dict(Params, override_nested(to_nested(p), overrides), "")


def lookup(p: Params, key: str) -> Any:
    """The value of a dotted key in `p`, in params.yaml's shape (a list of dicts for train.model.dense)."""
    node: Any = to_nested(p)
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node
