"""The demo report's sentences (cgh.demo.report): every branch a complete sentence. The whole report is written by
tests/system/test_demo.py."""

from __future__ import annotations

import itertools

import pytest

from cgh.demo.report import _against_raw

METHODS = ["cgh", "ressl", "mocov2"]


@pytest.mark.parametrize("above", [set(s) for n in range(4) for s in itertools.combinations(METHODS, n)])
def test_raw_pixel_sentence_is_complete_on_every_branch(above):
    """`cgh demo --quick` wrote "CGH, ReSSL, MoCo-v2 are not, in this budget" when no method beat raw pixels."""
    results = {m: {"knn_top1": 40.0 if m in above else 20.0} for m in METHODS}
    sentence = _against_raw(results, METHODS, 30.0)
    assert sentence.startswith("**Raw pixels** give 30.0% with the same kNN: ") and sentence.endswith(".")
    expected = {
        frozenset(): "CGH, ReSSL and MoCo-v2 are at or below it in this budget.",
        frozenset(METHODS): "CGH, ReSSL and MoCo-v2 are above it.",
        frozenset({"cgh"}): "CGH is above it; ReSSL and MoCo-v2 are at or below it in this budget.",
        frozenset({"ressl", "mocov2"}): "ReSSL and MoCo-v2 are above it; CGH is at or below it in this budget.",
    }
    if frozenset(above) in expected:
        assert sentence.endswith(expected[frozenset(above)]), sentence
    assert ", in this budget" not in sentence and "are not" not in sentence
    for clause in sentence.split(": ", 1)[1].rstrip(".").split("; "):  # each clause: names, a verb, a complement
        assert " is " in clause or " are " in clause, clause
        assert clause.endswith(("above it", "at or below it in this budget")), clause


def test_raw_pixel_sentence_of_one_method():
    assert _against_raw({"cgh": {"knn_top1": 10.0}}, ["cgh"], 30.0) == (
        "**Raw pixels** give 30.0% with the same kNN: CGH is at or below it in this budget.")
    assert _against_raw({"cgh": {"knn_top1": 50.0}}, ["cgh"], 30.0).endswith(": CGH is above it.")
