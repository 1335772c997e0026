"""Each change key with a mechanism in the catalogue is named with a mechanism and a why in a diff."""

from __future__ import annotations

from losstrace.explain.diff import diff_runs


def test_another_data_source_has_a_mechanism_and_ranks_first(make_record, make_fingerprint):
    a = make_record("run-a", seed=1, n_classes=5, params={"data.source": "japanese_vowels"})
    b = make_record(
        "run-b",
        seed=2,
        n_classes=3,
        tau=2.0,
        params={"data.source": "data/reviews.csv"},
        fp=make_fingerprint(content="c1", n_classes=3),
    )
    d = diff_runs(a, b)
    by_change = {c["change"]: c for c in d["causes"]}
    source = by_change["data.source"]
    assert "no known mechanism" not in source["why"]
    assert source["why"].startswith("data.source japanese_vowels → data/reviews.csv: another dataset is another task")
    assert "5 → 3 classes" in source["why"] and "data.content" in source["why"]
    assert d["causes"][0]["change"] == "data.source"  # the root of the content and label changes beside it
    assert source["confidence"] > by_change["data.content"]["confidence"]
