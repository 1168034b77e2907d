"""Quality metrics agree with scikit-learn."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from sklearn.metrics import accuracy_score, precision_score, recall_score

from database.quality import quality


@pytest.mark.parametrize("seed", range(5))
def test_quality_matches_sklearn(seed):
    rng = random.Random(seed)
    classes = ["a", "b", "c", "d"][: rng.randint(2, 4)]
    true = [rng.choice(classes) for _ in range(rng.randint(1, 60))]
    pred = [t if rng.random() < 0.6 else rng.choice(classes) for t in true]
    q = quality("m", "1", Counter(zip(pred, true)))
    labels = sorted(set(true) | set(pred))
    assert q.feedback_count == len(true)
    assert q.accuracy == pytest.approx(accuracy_score(true, pred))
    assert q.macro_precision == pytest.approx(precision_score(true, pred, labels=labels, average="macro",
                                                              zero_division=0))
    assert q.macro_recall == pytest.approx(recall_score(true, pred, labels=labels, average="macro", zero_division=0))
