"""The model zoo: every examples/*.yaml parses, lints as its comments say, and
builds and trains one epoch through the real path (ingest → featurize → zoo → fit) on
small data. Plus the zoo features the examples need: no recurrent layer (`rnn.layers: 0`),
a real best-epoch checkpoint, masked pooling, and metrics that need one-hot labels.

Small data (the whole file must stay near a minute on 2 cores): basic_motions as it is;
nrc_emotion as a sampled TSV of its words (all of them take 3-5x longer); the files the
examples expect from the user (token traces, GloVe vectors) are written here at the
paths the examples name; UCI sentiment is 300 lines of the copy in data/external when it
exists, else a synthetic stand-in.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from losstrace import params
from losstrace.data.bundled import _nrc
from losstrace.errors import LosstraceError
from losstrace.io import read_json
from losstrace.model import lint, zoo
from losstrace.record import run_files
from losstrace.stages import ingest, train

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
UCI = Path(__file__).resolve().parents[1] / "data" / "external" / "uci-sentiment"


@dataclass(frozen=True)
class Case:
    file: str
    errors: tuple[str, ...] = ()  # lint errors expected (exactly these codes)
    warnings: tuple[str, ...] = ()  # lint warnings that must be present (others may be too)
    absent: tuple[str, ...] = ()  # codes that must not fire at all
    data: str = ""  # "" = the example's own source; else which small data to write


CASES = [
    Case("word_emotion_bilstm.yaml", absent=("monitors_training_metric", "cudnn_ineligible"), data="nrc_sample"),
    Case("token_ids_bilstm.yaml", warnings=("cudnn_ineligible", "learning_rate_range"), data="tokens"),
    Case("token_ids_bilstm_lowlr.yaml", warnings=("cudnn_ineligible", "learning_rate_range"), data="tokens"),
    Case("sensor_lstm.yaml", absent=("cudnn_ineligible",)),
    Case(
        "frozen_glove_bigru_conv.yaml",
        errors=("activation_loss_mismatch",),
        warnings=("cudnn_ineligible",),
        data="glove",
    ),  # glove = nrc sample + a vectors file
    Case("frozen_glove_bigru_conv_fixed.yaml", warnings=("cudnn_ineligible",), data="glove"),
    Case("frozen_glove_bigru_conv_multilabel.yaml", warnings=("cudnn_ineligible",), data="glove"),
    Case("sentiment_ffnn.yaml", absent=("cudnn_ineligible", "unmasked_padding"), data="sentiment"),
    Case("sentiment_gru.yaml", absent=("cudnn_ineligible", "unmasked_padding"), data="sentiment"),
]
ADFA_CLASSES = ("adduser", "hydra_ftp", "hydra_ssh", "java_meterpreter", "meterpreter", "normal", "web_shell")


# ----------------------------------------------------------------------------- small data


def write_token_traces(path: Path, rows_per_class: int = 30, seed: int = 0) -> None:
    """7 classes of system-call-like id sequences; each class favours its own ids."""
    rng = np.random.default_rng(seed)
    lines = ["text\tlabel"]
    for c, name in enumerate(ADFA_CLASSES):
        for _ in range(rows_per_class):
            own = rng.integers(10 * c + 1, 10 * c + 15, size=rng.integers(20, 60))
            common = rng.integers(1, 80, size=len(own))
            ids = np.where(rng.random(len(own)) < 0.7, own, common)
            lines.append(" ".join(map(str, ids)) + f"\t{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glove(path: Path, dim: int = 16, seed: int = 0) -> None:
    """A tiny GloVe-format file (word v1 .. vdim) covering every other NRC word."""
    rng = np.random.default_rng(seed)
    words = sorted(set(_nrc(True, "|")["x"]))[::2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for w in words:
            fh.write(w + " " + " ".join(f"{v:.5f}" for v in rng.normal(size=dim)) + "\n")


def write_sentiment(path: Path, seed: int = 0) -> None:
    """300 sentence<TAB>label lines: 100 from each UCI file, or synthetic when the copy is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if UCI.is_dir():
        lines = [ln for f in sorted(UCI.glob("*.txt")) for ln in f.read_text(encoding="utf-8").splitlines()[:100]]
    else:
        rng = np.random.default_rng(seed)
        good, bad = ["great", "loved", "excellent", "fine", "tasty"], ["awful", "broken", "slow", "rude", "bland"]
        filler = ["the", "food", "phone", "movie", "was", "really", "and", "service", "it"]
        lines = []
        for i in range(300):
            label = i % 2
            words = list(rng.choice(filler, size=rng.integers(3, 12))) + [rng.choice(good if label else bad)]
            lines.append(" ".join(rng.permutation(words)) + f".\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_nrc_sample(path: Path, multilabel: bool, seed: int = 0) -> None:
    """A sample of the NRC words as a TSV (all 2344 / 6468 words take 3-5x longer).

    Single-label: 50 words per emotion. Multi-label: 800 words with their "|"-joined labels.
    """
    words = _nrc(multilabel, "|")
    if multilabel:
        sample = words.sample(n=800, random_state=seed)
    else:
        sample = words.groupby("label").sample(n=50, random_state=seed)  # smallest class: 114
    sample.rename(columns={"x": "text"})[["text", "label"]].to_csv(path, sep="\t", index=False)


def derive(example: Path, root: Path, data: str, **overrides: Any) -> Path:
    """The example's params with one epoch and small data, as root/params.yaml."""
    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    if data == "tokens":
        write_token_traces(root / raw["data"]["source"])  # where the example expects the user's file
        overrides.setdefault("data.max_len", 0)  # the synthetic traces are short: no padding to 400
    elif data == "glove":
        vectors = root / raw["train"]["model"]["embedding"]["pretrained"]
        write_glove(vectors)
        # The zoo opens the file relative to the working directory (the project root in
        # `dvc repro`); the test's root is tmp.
        overrides.setdefault("train.model.embedding.pretrained", str(vectors))
    if data in ("nrc_sample", "glove"):
        write_nrc_sample(root / "nrc_sample.tsv", raw["data"]["multilabel"])
        overrides.setdefault("data.source", "nrc_sample.tsv")
    elif data == "sentiment":
        write_sentiment(root / "uci-sentiment" / "sample.txt")
        overrides.setdefault("data.source", "uci-sentiment/*.txt")
    params.override_nested(raw, {"train.epochs": 1, **overrides})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Prepared:
    p: params.Params
    info: dict[str, Any]
    labels: dict[str, int]
    dir: Path


def prepare(example: Path, root: Path, data: str, **overrides: Any) -> Prepared:
    path = derive(example, root, data, **overrides)
    ingest.main(path, root / "prepared", root)
    prepared = root / "prepared"
    return Prepared(
        params.load(path), read_json(prepared / "ingest.json"), read_json(prepared / "labels.json"), prepared
    )


def fit(prep: Prepared):
    train.seed_everything(prep.p.base.seed)
    ds = train.load_dataset(prep.p, prep.dir)
    model, rec = train.run(prep.p, ds)
    return model, rec, ds


def codes(findings, severity: str | None = None) -> list[str]:
    return [f.code for f in findings if severity is None or f.severity == severity]


# ------------------------------------------------------------------------- the examples


def flat_keys(text: str) -> dict[str, Any]:
    return params.flatten(params.from_dict(params.Params, yaml.safe_load(text), ""))


def key_lines(text: str) -> dict[str, int]:
    """dotted key → 0-based line of `key:` (via PyYAML's node marks)."""
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                out[prefix + k.value] = k.start_mark.line
                walk(v, f"{prefix}{k.value}.")

    walk(yaml.compose(text), "")
    return out


def test_every_example_is_listed_and_documented():
    files = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert files == sorted(c.file for c in CASES)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(f in readme for f in files)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_example_is_complete_and_comments_every_change(case):
    """Same keys as params.yaml; every value that differs says so on its line, in the form
    `# (old value in params.yaml) why`: an example inherits the shipped thresholds unless it
    states its reason, so a silently loosened threshold cannot hide the symptom it shows."""
    base_text = (REPO / "params.yaml").read_text(encoding="utf-8")
    text = (EXAMPLES / case.file).read_text(encoding="utf-8")
    assert set(yaml.safe_load(text)) == set(yaml.safe_load(base_text))
    assert set(key_lines(text)) == set(key_lines(base_text))
    base, mine = flat_keys(base_text), flat_keys(text)
    lines, where = text.splitlines(), key_lines(text)
    changed = [k for k in mine if mine[k] != base.get(k)]
    assert changed
    for key in changed:
        yaml_key = key if key in where else key.split(".0.")[0]  # dense list items live on the list's line
        comment = lines[where[yaml_key]].partition("#")[2]
        reason = comment.partition("in params.yaml)")[2].strip()
        assert comment.lstrip().startswith("(") and reason, (
            f"{case.file}: {key} differs from params.yaml without '# (old value in params.yaml) why'"
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_example_lints_builds_and_trains_one_epoch(case, tmp_path):
    params.load(EXAMPLES / case.file)  # the file itself parses, before any substitution
    prep = prepare(EXAMPLES / case.file, tmp_path, case.data)
    found = lint.run(prep.p, prep.info, prep.labels)
    assert sorted(set(codes(found, "error"))) == sorted(case.errors), found
    assert set(case.warnings) <= set(codes(found, "warning")), found
    assert not set(case.absent) & set(codes(found)), found
    if case.errors:
        return  # lint stops these before anything is built (see the train.main test below)

    t0 = time.perf_counter()
    model, rec, ds = fit(prep)
    seconds = time.perf_counter() - t0
    history = run_files.history_frame(rec.epochs)
    assert len(history) == 1 and math.isfinite(history["loss"].iloc[0]) and math.isfinite(history["val_loss"].iloc[0])
    assert rec.kept_epoch == 0
    assert model.output_shape == (None, zoo.output_units(prep.p.train, len(ds.labels), ds.info["multilabel"]))
    if case.data == "glove":
        assert_frozen_vectors(model, prep, ds)
    print(
        f"\n{case.file}: loss {history['loss'].iloc[0]:.4f}, val_loss {history['val_loss'].iloc[0]:.4f}, "
        f"{seconds:.1f}s ({len(ds.x['train'])} train rows)"
    )


def test_sigmoid_with_sparse_categorical_stops_the_train_stage(tmp_path):
    """The report-003 mistake never reaches Keras: train.main fails on lint with the fix."""
    prep = prepare(EXAMPLES / "frozen_glove_bigru_conv.yaml", tmp_path, "glove")
    with pytest.raises(LosstraceError, match="activation_loss_mismatch") as e:
        train.main(
            tmp_path / "params.yaml",
            prep.dir,
            tmp_path / "validate",
            tmp_path / "models",
            tmp_path / "reports",
            tmp_path,
        )
    assert "softmax" in str(e.value)
    assert not (tmp_path / "models").exists()


def assert_frozen_vectors(model, prep: Prepared, ds) -> None:
    """The vectors file really is in the embedding, at its own width, unchanged by training."""
    emb = model.get_layer("embedding")
    expected = zoo.load_vectors(Path(prep.p.train.model.embedding.pretrained), ds.featurizer.vocab, 100)
    assert not emb.trainable and emb.output_dim == 16  # the file's width, not embedding.dim (100)
    assert np.array_equal(emb.get_weights()[0], expected)
    assert 0.3 < np.mean(expected[2:].any(axis=1)) < 0.7  # the file covers about half the words


def test_sentiment_gru_without_mask_is_the_reports_unmasked_model(tmp_path):
    p = params.load(EXAMPLES / "sentiment_gru.yaml")
    unmasked = dataclasses.replace(
        p,
        train=dataclasses.replace(
            p.train,
            model=dataclasses.replace(
                p.train.model, embedding=dataclasses.replace(p.train.model.embedding, mask_zero=False)
            ),
        ),
    )
    info = {"input": "text", "multilabel": False, "splits": {"train": 1920}}
    assert "unmasked_padding" in codes(lint.run(unmasked, info, {"0": 0, "1": 1}), "warning")


# --------------------------------------------------------------- rnn.layers: 0 (no RNN)


def P(**train_kw) -> params.Params:
    return params.from_dict(params.Params, {"train": train_kw}, "")


def test_zero_layers_needs_a_pooling_over_steps():
    with pytest.raises(LosstraceError, match="pooling=last needs a recurrent layer"):
        P(model={"rnn": {"layers": 0}})
    with pytest.raises(LosstraceError, match="must be >= 0"):
        P(model={"rnn": {"layers": -1}})
    assert P(model={"rnn": {"layers": 0}, "pooling": "avg"}).train.model.rnn.layers == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model": {"conv": {"filters": 8}}}, "cannot reduce the Conv1D output"),
        ({"model": {"rnn": {"return_sequences": True}}}, "leaves a sequence"),
        ({"metrics": ["accuracy", "f1"]}, "train.metrics='f1' is not one of"),
        ({"callbacks": {"checkpoint_monitor": "val_auc"}}, "not logged by this model"),
        ({"callbacks": {"early_stopping": True, "monitor": "val_los"}}, "did you mean val_loss"),
    ],
)
def test_model_params_that_cannot_build_fail_at_load(bad, match):
    with pytest.raises(LosstraceError, match=match):
        P(**bad)


def test_zero_layers_skip_the_recurrent_lint_checks():
    # Settings that would fire cudnn_ineligible / unmasked_padding on a recurrent layer.
    p = P(
        model={
            "rnn": {"layers": 0, "recurrent_dropout": 0.1, "cell": "simple"},
            "embedding": {"mask_zero": False},
            "pooling": "max",
        }
    )
    found = lint.run(p, {"input": "text", "multilabel": False, "splits": {"train": 1000}}, {"0": 0, "1": 1, "2": 2})
    assert not {"cudnn_ineligible", "unmasked_padding"} & set(codes(found))


def test_zero_layers_model_has_no_recurrent_layer_and_pools_real_steps_only():
    import keras

    t = P(model={"rnn": {"layers": 0}, "pooling": "max", "dropout": 0.0}).train
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when a layer drops a mask
        model = zoo.build(t, "text", 6, 0, 10, 3, False, 1)
    assert model.name == "feedforward_classifier"
    assert not any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) for layer in model.layers)
    pooled = keras.Model(model.inputs, model.get_layer("output").input)
    x = np.array([[3, 4, 0, 0, 0, 0], [0] * 6], dtype="int32")
    out = pooled.predict(x, verbose=0)
    table = model.get_layer("embedding").get_weights()[0]
    assert np.allclose(out[0], table[[3, 4]].max(axis=0))  # padding row 0 never wins the max
    assert np.array_equal(out[1], np.zeros_like(out[1]))  # an empty text pools to 0, not -1e9


def test_masked_conv_and_pooling_ignore_padding_and_survive_save(tmp_path):
    """Conv1D drops Keras' mask; the zoo shifts it through the 'valid' conv itself, so the
    pooled features of a sequence do not depend on how much padding follows it. (No RNN
    here to keep it fast; the frozen_glove examples train Conv1D after a masked BiGRU.)"""
    import keras

    t = P(
        model={"rnn": {"layers": 0}, "conv": {"filters": 3, "kernel_size": 2}, "pooling": "avg_max", "dropout": 0.0}
    ).train
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when a layer drops a mask
        short, long = zoo.build(t, "text", 6, 0, 10, 3, False, 1), zoo.build(t, "text", 9, 0, 10, 3, False, 1)
    long.set_weights(short.get_weights())  # no weight depends on the sequence length

    def pooled(model, ids: list[int]):
        x = np.zeros((1, model.input_shape[1]), dtype="int32")
        x[0, : len(ids)] = ids
        return keras.Model(model.inputs, model.get_layer("output").input).predict(x, verbose=0)

    assert np.allclose(pooled(short, [3, 4, 5]), pooled(long, [3, 4, 5]), atol=1e-6)
    assert np.isfinite(pooled(short, [])).all()  # no NaN from dividing by zero real steps
    short.fit(np.array([[3, 4, 5, 0, 0, 0]] * 3, dtype="int32"), np.array([0, 1, 2]), epochs=1, verbose=0)
    short.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = np.array([[3, 4, 5, 0, 0, 0], [2, 0, 0, 0, 0, 0]], dtype="int32")
    assert np.allclose(short.predict(x, verbose=0), again.predict(x, verbose=0))


def test_conv_longer_than_the_sequences_is_a_clear_error():
    t = P(model={"rnn": {"return_sequences": True}, "conv": {"filters": 4, "kernel_size": 3}, "pooling": "max"}).train
    with pytest.raises(LosstraceError, match="set data.max_len: 3 or more"):
        zoo.build(t, "text", 1, 0, 10, 3, False, 1)


# ------------------------------------------------- metrics that need one-hot labels


def test_auc_precision_recall_with_sparse_labels_are_rejected():
    bad = P(metrics=["accuracy", "precision", "recall"])
    info = {"input": "text", "multilabel": False, "splits": {"train": 1000}}
    labels = {str(i): i for i in range(8)}
    mism = [f for f in lint.run(bad, info, labels) if f.code == "activation_loss_mismatch"]
    assert mism and mism[0].severity == "error" and "train.metrics" in mism[0].evidence["keys"]
    assert "categorical_crossentropy" in mism[0].suggestion
    with pytest.raises(LosstraceError, match="precision needs one-hot labels"):
        zoo.build(bad.train, "text", 5, 0, 10, 8, False, 1)
    fixed = P(metrics=["accuracy", "precision", "recall"], loss="categorical_crossentropy")
    assert "activation_loss_mismatch" not in codes(lint.run(fixed, info, labels))


def test_accuracy_on_multi_hot_labels_scores_each_label_not_the_argmax():
    multi = P(loss="binary_crossentropy", output_activation="sigmoid")
    model = zoo.build(multi.train, "text", 5, 0, 10, 3, True, 1)
    x = np.array([[2, 3, 0, 0, 0]])
    probs = model.predict(x, verbose=0)
    y = (probs > 0.5).astype("float32")  # every label right ...
    y[0, np.argmax(probs[0])] = 1.0 - y[0, np.argmax(probs[0])]  # ... but the most probable one
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(2 / 3)  # per label; argmax accuracy would give 0 or 1


# ------------------------------------------------------------------ best checkpoint


@pytest.mark.parametrize("early_stopping", [False, True])
def test_best_checkpoint_restores_the_best_epoch(prepared, early_stopping):
    # A high learning rate makes val_loss bounce, so the best epoch is not the last one.
    p = P(
        epochs=8,
        learning_rate=0.05,
        callbacks={
            "checkpoint_monitor": "val_loss",
            "early_stopping": early_stopping,
            "monitor": "val_accuracy",
            "patience": 20,
        },
    )
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    model, rec = train.run(p, ds)
    history = run_files.history_frame(rec.epochs)
    assert history["epoch"].tolist() == list(range(8))  # history still holds every epoch
    best = int(history["val_loss"].idxmin())
    assert rec.kept_epoch == history["epoch"][best]
    assert rec.kept_epoch != 7, "pick a config whose best epoch is not the last, or the test proves nothing"
    restored = model.evaluate(ds.x["val"], ds.y["val"], batch_size=p.train.batch_size, verbose=0, return_dict=True)
    assert restored["loss"] == pytest.approx(history["val_loss"][best], rel=1e-5)


def test_without_checkpoint_monitor_the_last_epoch_is_kept(prepared):
    p = P(epochs=2)
    train.seed_everything(p.base.seed)
    ds = train.load_dataset(p, prepared)
    model, rec = train.run(p, ds)
    history = run_files.history_frame(rec.epochs)
    assert rec.kept_epoch == 1
    restored = model.evaluate(ds.x["val"], ds.y["val"], batch_size=p.train.batch_size, verbose=0, return_dict=True)
    assert restored["loss"] == pytest.approx(history["val_loss"].iloc[-1], rel=1e-5)
