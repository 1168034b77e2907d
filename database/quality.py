"""Quality metrics from (predicted, true) label counts: accuracy, macro precision and macro recall."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Quality:
    """Quality of one model version over the predictions that have feedback."""

    model: str
    model_version: str
    feedback_count: int
    accuracy: float
    macro_precision: float
    macro_recall: float


def quality(model: str, version: str, confusion: Mapping[tuple[str, str], int]) -> Quality:
    """Metrics from counts keyed (predicted, true).

    Macro averages run over every class seen as predicted or true label; a class never predicted has
    precision 0 and a class never true has recall 0 (scikit-learn's zero_division=0).
    """
    total = sum(confusion.values())
    classes = sorted({c for pair in confusion for c in pair})
    correct = sum(n for (p, t), n in confusion.items() if p == t)
    precisions, recalls = [], []
    for c in classes:
        tp = confusion.get((c, c), 0)
        predicted = sum(n for (p, _), n in confusion.items() if p == c)
        true = sum(n for (_, t), n in confusion.items() if t == c)
        precisions.append(tp / predicted if predicted else 0.0)
        recalls.append(tp / true if true else 0.0)
    return Quality(model=model, model_version=version, feedback_count=total,
                   accuracy=correct / total if total else 0.0,
                   macro_precision=sum(precisions) / len(classes) if classes else 0.0,
                   macro_recall=sum(recalls) / len(classes) if classes else 0.0)
