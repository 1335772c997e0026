"""Each lint rule fires on the mistake from the user reports and stays quiet on the fix."""

from __future__ import annotations

import pytest

from losstrace import params
from losstrace.model import lint

TEN = {str(i): i for i in range(10)}
TWO = {"0": 0, "1": 1}


def P(**train):
    return params.from_dict(params.Params, {"train": train}, "")


def info(kind="text", multilabel=False, rows=1000):
    return {"input": kind, "multilabel": multilabel, "splits": {"train": rows}}


def codes(findings, severity=None):
    return [f.code for f in findings if severity is None or f.severity == severity]


def test_default_params_are_clean():
    assert codes(lint.run(params.Params(), info("numeric", rows=216), {str(i): i for i in range(9)}), "error") == []
    assert codes(lint.run(params.Params(), info("numeric", rows=216), {str(i): i for i in range(9)}), "warning") == []


@pytest.mark.parametrize(
    "bad, fixed, labels, multilabel",
    [
        # sigmoid output with categorical cross-entropy, 7 classes
        (
            dict(output_activation="sigmoid", loss="categorical_crossentropy"),
            dict(output_activation="softmax", loss="categorical_crossentropy"),
            TEN,
            False,
        ),
        # sigmoid + sparse categorical on exclusive classes
        (
            dict(output_activation="sigmoid", loss="sparse_categorical_crossentropy"),
            dict(output_activation="softmax", loss="sparse_categorical_crossentropy"),
            TEN,
            False,
        ),
        # sparse categorical loss on a multi-label head
        (
            dict(output_activation="sigmoid", loss="sparse_categorical_crossentropy"),
            dict(output_activation="sigmoid", loss="binary_crossentropy"),
            TEN,
            True,
        ),
        # softmax on multi-label data
        (
            dict(output_activation="softmax", loss="binary_crossentropy"),
            dict(output_activation="sigmoid", loss="binary_crossentropy"),
            TEN,
            True,
        ),
        # softmax over one unit
        (
            dict(output_activation="softmax", loss="binary_crossentropy"),
            dict(output_activation="sigmoid", loss="binary_crossentropy"),
            TWO,
            False,
        ),
        # linear output without from_logits
        (dict(output_activation="linear"), dict(output_activation="linear", from_logits=True), TEN, False),
        # binary cross-entropy on 10 exclusive classes
        (
            dict(output_activation="softmax", loss="binary_crossentropy"),
            dict(output_activation="softmax", loss="sparse_categorical_crossentropy"),
            TEN,
            False,
        ),
        # output units disagree with the classes
        (dict(output_units=7), dict(output_units=10), TEN, False),
        # ... or with the label shape: one 0/1 column under binary cross-entropy on two classes
        (
            dict(output_activation="sigmoid", loss="binary_crossentropy", output_units=2),
            dict(output_activation="sigmoid", loss="binary_crossentropy", output_units=1),
            TWO,
            False,
        ),
        # integer ids need a score per class: one unit cannot hold ids 0 and 1
        (dict(output_activation="sigmoid", output_units=1), dict(output_units=2), TWO, False),
        # multi-hot labels need a unit per label
        (
            dict(output_activation="sigmoid", loss="binary_crossentropy", output_units=1),
            dict(output_activation="sigmoid", loss="binary_crossentropy", output_units=2),
            TWO,
            True,
        ),
    ],
)
def test_activation_loss_mismatch(bad, fixed, labels, multilabel):
    found = lint.run(P(**bad), info(multilabel=multilabel), labels)
    mism = [f for f in found if f.code == "activation_loss_mismatch" and f.severity == "error"]
    assert mism, found
    assert mism[0].suggestion and mism[0].evidence["keys"]
    assert "activation_loss_mismatch" not in codes(lint.run(P(**fixed), info(multilabel=multilabel), labels), "error")


def test_hidden_dense_without_activation_warns():
    bad = lint.run(P(model={"dense": [{"units": 64, "activation": ""}]}), info(), TEN)
    assert [f.evidence["layer"] for f in bad if f.code == "activation_loss_mismatch"] == ["dense_0"]
    good = lint.run(P(model={"dense": [{"units": 64, "activation": "relu"}]}), info(), TEN)
    assert "activation_loss_mismatch" not in codes(good)


def test_unmasked_padding_on_text_final_state():
    bad = lint.run(P(model={"embedding": {"mask_zero": False}, "rnn": {"cell": "gru"}}), info("text"), TWO)
    assert "unmasked_padding" in codes(bad, "warning")
    assert "unmasked_padding" not in codes(lint.run(P(model={"rnn": {"cell": "gru"}}), info("text"), TWO))
    # pooling over all steps does not read only the final state
    pooled = lint.run(P(model={"embedding": {"mask_zero": False}, "pooling": "max"}), info("text"), TWO)
    assert "unmasked_padding" not in codes(pooled)


@pytest.mark.parametrize(
    "rnn, key",
    [
        ({"recurrent_dropout": 0.1}, "train.model.rnn.recurrent_dropout"),
        ({"activation": "relu"}, "train.model.rnn.activation"),
        ({"recurrent_activation": "hard_sigmoid"}, "train.model.rnn.recurrent_activation"),
        ({"unroll": True}, "train.model.rnn.unroll"),
        ({"use_bias": False}, "train.model.rnn.use_bias"),
        ({"cell": "gru", "reset_after": False}, "train.model.rnn.reset_after"),
        ({"cell": "simple"}, "train.model.rnn.cell"),
    ],
)
def test_cudnn_ineligible_names_key_and_layer(rnn, key):
    found = [
        f
        for f in lint.run(P(model={"rnn": {**rnn, "bidirectional": True}}), info(), TEN)
        if f.code == "cudnn_ineligible"
    ]
    assert [f.evidence["keys"] for f in found] == [[key]]
    assert found[0].evidence["layers"][0].startswith("bi_")
    assert "slower" in found[0].evidence["message"]


def test_cudnn_eligible_dropout_is_fine():
    assert "cudnn_ineligible" not in codes(lint.run(P(model={"rnn": {"dropout": 0.2}}), info(), TEN))


def test_learning_rate_range_low_and_high():
    low = [
        f
        for f in lint.run(P(optimizer="rmsprop", learning_rate=0.0001), info(), TWO)
        if f.code == "learning_rate_range"
    ]
    assert low and "plateau" in low[0].evidence["message"]
    assert low[0].suggestion == "train.learning_rate: 0.0001 → 0.001"
    high = [f for f in lint.run(P(learning_rate=0.01), info(), TWO) if f.code == "learning_rate_range"]
    assert high and "jitter" in high[0].evidence["message"]
    assert "learning_rate_range" not in codes(lint.run(P(learning_rate=0.001), info(), TWO))


def test_small_batch_and_too_few_updates():
    small = [f for f in lint.run(P(batch_size=2), info(rows=98), TEN) if f.code == "small_batch"]
    assert small and small[0].evidence["batch_size"] == 2
    tiny_share = [f for f in lint.run(P(batch_size=16), info(rows=10000), TEN) if f.code == "small_batch"]
    assert tiny_share and tiny_share[0].suggestion == "train.batch_size: 16 → 128"
    assert "small_batch" not in codes(lint.run(P(batch_size=32), info(rows=1000), TEN))
    few = lint.run(P(epochs=2, batch_size=128), info(rows=1000), TEN)
    assert "too_few_updates" in codes(few, "info")


def test_monitor_on_training_metric():
    bad = lint.run(P(callbacks={"early_stopping": True, "monitor": "accuracy"}), info(), TEN)
    assert "monitors_training_metric" in codes(bad, "warning")
    good = lint.run(P(callbacks={"early_stopping": True, "monitor": "val_loss"}), info(), TEN)
    assert "monitors_training_metric" not in codes(good)


def test_unmasked_padding_does_not_fire_on_pre_padded_sequences():
    import dataclasses

    from losstrace.model import lint
    from losstrace.params import Params

    p = Params()
    unmasked = dataclasses.replace(
        p.train,
        model=dataclasses.replace(
            p.train.model, embedding=dataclasses.replace(p.train.model.embedding, mask_zero=False)
        ),
    )
    post = dataclasses.replace(p, train=unmasked)
    pre = dataclasses.replace(post, data=dataclasses.replace(p.data, padding="pre"))
    assert [f.code for f in lint.padding_checks(post, "text")] == ["unmasked_padding"]
    assert lint.padding_checks(pre, "text") == []
