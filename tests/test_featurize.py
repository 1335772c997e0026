import numpy as np
import pandas as pd

from losstrace.data import featurize


def frame(xs, labels=None):
    lengths = [len(x) if not isinstance(x, str) else len(x.split()) for x in xs]
    return pd.DataFrame({"x": xs, "label": labels or ["a"] * len(xs), "length": lengths})


def test_numeric_standardises_on_train_only_and_pads_with_mask_value():
    train = frame([[[0.0, 10.0], [2.0, 10.0]], [[4.0, 10.0]]])
    fz = featurize.fit(train, "numeric", 0, 100, "word")
    assert fz.max_len == 2 and fz.channels == 2
    assert np.allclose(fz.mean, [2.0, 10.0])
    assert fz.std[1] == 1.0  # constant channel: no division by zero
    x, stats = fz.transform(frame([[[100.0, 10.0]]])["x"])
    assert x.shape == (1, 2, 2)
    assert x[0, 0, 0] > 10  # val statistics did not leak into the scaler
    assert not x[0, 1].any()  # padding step is all zero → masked
    assert x[0, 0].any()  # a real step that standardises to zero is nudged, not masked
    assert stats["truncation_rate"] == 0.0


def test_tokens_map_unknown_ids_to_oov_and_truncate():
    train = frame([[5, 5, 7], [7, 9]])
    fz = featurize.fit(train, "tokens", 2, 100, "word")
    assert fz.vocab == ["5", "7", "9"]  # by frequency, ties alphabetical
    x, stats = fz.transform(pd.Series([[5, 42, 7], [9]]))
    assert x.tolist() == [[2, featurize.OOV], [4, featurize.PAD]]
    assert stats["truncation_rate"] == 0.5
    assert stats["oov_rate"] == 1 / 3


def test_text_word_and_char_levels():
    train = frame(["Good case, excellent value.", "Bad case"])
    fz = featurize.fit(train, "text", 0, 100, "word")
    x, _ = fz.transform(pd.Series(["good VALUE!"]))
    assert [fz.vocab[i - 2] for i in x[0] if i >= 2] == ["good", "value"]
    fz_c = featurize.fit(frame(["ab", "ba"]), "text", 3, 100, "char")
    assert sorted(fz_c.vocab) == ["a", "b"]


def test_label_formats_follow_the_loss():
    idx = {"a": 0, "b": 1, "c": 2}
    labels = pd.Series(["a", "c"])
    assert featurize.encode_labels(labels, idx, False, "|", "sparse_categorical_crossentropy").tolist() == [0, 2]
    assert featurize.encode_labels(labels, idx, False, "|", "categorical_crossentropy").tolist() == [[1, 0, 0], [0, 0, 1]]
    multi = featurize.encode_labels(pd.Series(["a|b", "c"]), idx, True, "|", "binary_crossentropy")
    assert multi.tolist() == [[1, 1, 0], [0, 0, 1]]
    binary = featurize.encode_labels(pd.Series(["0", "1"]), {"0": 0, "1": 1}, False, "|", "binary_crossentropy")
    assert binary.shape == (2, 1)


def test_featurizer_round_trips_through_json():
    fz = featurize.fit(frame([[1, 2], [2, 3]]), "tokens", 0, 10, "word")
    assert featurize.Featurizer.from_dict(fz.to_dict()) == fz
