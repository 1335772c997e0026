import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd

from losstrace.data import checks, featurize

# Punctuation, case, accents, apostrophes, Unicode punctuation and whitespace, emoji.
SAMPLE = [
    "Good case, Excellent value.",
    "Wow... Loved this place!!",
    "I don't think it's 'great' -- it's OK (ish).",
    "Café CAFÉ café naïve Ärger ΣΟΦΙΑ İstanbul straße",
    "tabs\tand\nnewlines\r\nand\x0bvt\x0cff   runs",
    "no\xa0break\u2003em\u3000ideographic\u200bzero-width",
    "“Curly quotes” — em dash … ¿Qué? ¡Sí! 1,000.50 e-mail@x.com #tag 50% a_b",
    "🙂 emoji 👍🏽 and ZWJ 👩‍💻",
    "",
    "   ",
    "!!! ...",
]


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


def texts(xs):
    return pd.Series(xs, dtype=object)


def test_text_word_vocabulary_from_train_only_pad_and_oov():
    train = frame(["the cat sat", "the dog sat", "The CAT!"])
    fz = featurize.fit(train, "text", 4, 100, "word")
    # TextVectorization's order: by count, ties in descending byte order.
    assert fz.vocab == ["the", "sat", "cat", "dog"]
    assert fz.vocab_size == 6 and fz.text_level == "word"
    x, stats = fz.transform(texts(["The zebra sat.", "dog"]))
    assert x.dtype == np.int32 and x.shape == (2, 4)
    assert x.tolist() == [[2, featurize.OOV, 3, featurize.PAD], [5, 0, 0, 0]]
    assert stats == {"truncation_rate": 0.0, "oov_rate": 1 / 4}
    val_only = featurize.fit(frame(["the cat sat"]), "text", 4, 100, "word")
    assert "zebra" not in val_only.vocab and "dog" not in val_only.vocab


def test_text_max_tokens_counts_the_two_reserved_ids():
    fz = featurize.fit(frame(["a a a b b c"]), "text", 0, 4, "word")
    assert fz.vocab == ["a", "b"] and fz.vocab_size == 4


def test_text_char_level_drops_whitespace_and_keeps_train_vocabulary():
    train = frame(["ab ba", "a\tc!"])
    fz = featurize.fit(train, "text", 4, 100, "char")
    assert fz.vocab == ["a", "b", "c"]  # no " " or "\t" token, "!" stripped
    x, stats = fz.transform(texts(["c a z", "B A B A B"]))
    assert x.tolist() == [[4, 2, featurize.OOV, 0], [3, 2, 3, 2]]
    assert stats["truncation_rate"] == 0.5  # "babab" has 5 characters > 4
    assert stats["oov_rate"] == 1 / 7  # z, among the 3 + 4 kept characters


def test_text_truncation_and_oov_rates():
    fz = featurize.fit(frame(["one two three"]), "text", 3, 100, "word")
    x, stats = fz.transform(texts(["one two three four five", "six", "one two", "seven eight nine ten"]))
    assert x[0].tolist() == [fz.vocab.index("one") + 2, fz.vocab.index("two") + 2, fz.vocab.index("three") + 2]
    assert x[1].tolist() == [featurize.OOV, 0, 0]
    assert stats["truncation_rate"] == 2 / 4
    # kept tokens: 3 + 1 + 2 + 3 = 9; OOV among them: six, seven, eight, nine (four, five, ten were cut)
    assert stats["oov_rate"] == 4 / 9


def test_text_without_any_train_token_maps_everything_to_oov():
    fz = featurize.fit(frame(["...", "!?"]), "text", 2, 100, "word")
    assert fz.vocab == [] and fz.vocab_size == 2
    x, stats = fz.transform(texts(["a b c", ""]))
    assert x.tolist() == [[1, 1], [0, 0]]
    assert stats == {"truncation_rate": 0.5, "oov_rate": 1.0}


def test_text_featurizer_round_trips_through_json_with_identical_arrays():
    for level in ("word", "char"):
        fz = featurize.fit(frame(SAMPLE), "text", 12, 50, level)
        doc = json.dumps(fz.to_dict())
        assert len(doc) < 2000
        again = featurize.Featurizer.from_dict(json.loads(doc))
        assert again == fz
        a, stats_a = fz.transform(texts(SAMPLE))
        b, stats_b = again.transform(texts(SAMPLE))
        assert np.array_equal(a, b) and stats_a == stats_b


def test_text_vocabulary_is_deterministic_across_row_order():
    rows = ["b a", "c a", "d b", "a c", "e f", "f e", "Z z"] * 3  # many count ties
    order = np.random.default_rng(7).permutation(len(rows))
    for level in ("word", "char"):
        first = featurize.fit(frame(rows), "text", 0, 100, level)
        second = featurize.fit(frame([rows[i] for i in order]), "text", 0, 100, level)
        assert first.vocab == second.vocab
        assert first.vocab == featurize.fit(frame(rows), "text", 0, 100, level).vocab


def test_pure_tokenize_matches_text_vectorization():
    """The data checks tokenise without TensorFlow; they must see what training sees."""
    import tensorflow as tf

    for level in ("word", "char"):
        layer = featurize._text_layer(level)
        layer.adapt(tf.constant(SAMPLE))
        vocab = layer.get_vocabulary()
        ragged = layer(tf.constant(SAMPLE)).to_list()
        seen = [[vocab[i] for i in row] for row in ragged]
        assert featurize.tokenize(SAMPLE, level) == seen
        assert checks.token_counts(texts(SAMPLE), "text", level) == Counter(t for row in seen for t in row)
        # ... and the featurizer (vocabulary saved, layer rebuilt) gives the same ids.
        fz = featurize.fit(frame(SAMPLE), "text", 100, 10_000, level)
        x, stats = fz.transform(texts(SAMPLE))
        assert [[fz.vocab[i - 2] for i in row if i] for row in x.tolist()] == seen
        assert stats == {"truncation_rate": 0.0, "oov_rate": 0.0}
    words = featurize.tokenize(SAMPLE, "word")
    assert words[2][:3] == ["i", "dont", "think"] and "cafÉ" in words[3]  # ASCII-only lower-casing
    assert "no\xa0break\u2003em\u3000ideographic\u200bzerowidth" in words[5]  # Unicode spaces split nothing
    assert " " not in featurize.tokenize(SAMPLE, "char")[0]


def test_text_checks_do_not_import_tensorflow():
    code = (
        "import sys; import pandas as pd; from losstrace.data import checks, featurize; "
        "from losstrace.params import ValidateParams; "
        "s = {'train': pd.DataFrame({'x': ['a b', 'c'], 'label': 'a', 'length': 1}), "
        "'val': pd.DataFrame({'x': ['z y', 'a'], 'label': 'a', 'length': 1})}; "
        "assert checks.check_oov(s, ValidateParams(), 'text', 'word'); "
        "featurize.tokenize(['a'], 'char'); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_label_formats_follow_the_loss():
    idx = {"a": 0, "b": 1, "c": 2}
    labels = pd.Series(["a", "c"])
    assert featurize.encode_labels(labels, idx, False, "|", "sparse_categorical_crossentropy").tolist() == [0, 2]
    assert featurize.encode_labels(labels, idx, False, "|", "categorical_crossentropy").tolist() == [
        [1, 0, 0],
        [0, 0, 1],
    ]
    multi = featurize.encode_labels(pd.Series(["a|b", "c"]), idx, True, "|", "binary_crossentropy")
    assert multi.tolist() == [[1, 1, 0], [0, 0, 1]]
    binary = featurize.encode_labels(pd.Series(["0", "1"]), {"0": 0, "1": 1}, False, "|", "binary_crossentropy")
    assert binary.shape == (2, 1)


def test_featurizer_round_trips_through_json():
    fz = featurize.fit(frame([[1, 2], [2, 3]]), "tokens", 0, 10, "word")
    assert featurize.Featurizer.from_dict(fz.to_dict()) == fz


def test_pre_padding_puts_the_padding_first_for_every_input_kind():
    tokens = featurize.fit(frame([[5, 5, 7], [7, 9]]), "tokens", 3, 100, "word", padding="pre")
    x, _ = tokens.transform(pd.Series([[5, 7, 9, 9], [9]]))
    assert x.tolist() == [[2, 3, 4], [featurize.PAD, featurize.PAD, 4]]  # truncation keeps the first steps
    text = featurize.fit(frame(["good case", "bad case value"]), "text", 3, 100, "word", padding="pre")
    x, _ = text.transform(pd.Series(["good"]))
    assert x[0, :2].tolist() == [featurize.PAD, featurize.PAD] and x[0, 2] >= 2
    numeric = featurize.fit(frame([[[1.0], [3.0]], [[2.0]]]), "numeric", 0, 100, "word", padding="pre")
    x, _ = numeric.transform(frame([[[5.0]]])["x"])
    assert not x[0, 0].any() and x[0, 1].any()
    assert featurize.Featurizer.from_dict(numeric.to_dict()).padding == "pre"


def test_standardize_off_feeds_raw_values_and_defaults_keep_featurizer_json_as_it_was():
    train = frame([[[0.0, 10.0], [2.0, 10.0]], [[4.0, 10.0]]])
    raw = featurize.fit(train, "numeric", 0, 100, "word", standardize=False)
    x, _ = raw.transform(frame([[[100.0, 10.0]]])["x"])
    assert x[0, 0].tolist() == [100.0, 10.0]
    default = featurize.fit(train, "numeric", 0, 100, "word")
    assert "padding" not in default.to_dict() and "standardize" not in default.to_dict()
    assert raw.to_dict()["standardize"] is False
