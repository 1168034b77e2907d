"""The quality report of a scored day against its known labels: accuracy, macro precision and recall, the
confusion matrix, as JSON and a PNG chart (matplotlib, no display needed)."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import luigi


def metrics(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict:
    """Accuracy, macro precision/recall over the classes seen as true or predicted label (a class never predicted
    has precision 0, never true recall 0: scikit-learn's zero_division=0, the same as the server's GetStats),
    per-class figures and the confusion matrix (rows: true class, columns: predicted class, in `classes` order
    plus any label outside it)."""
    pairs = Counter(zip(true, predicted))
    order = list(classes) + sorted({c for pair in pairs for c in pair} - set(classes))
    seen = sorted({c for pair in pairs for c in pair})
    total = sum(pairs.values())
    correct = sum(n for (t, p), n in pairs.items() if t == p)
    per_class = {}
    for c in seen:
        tp = pairs.get((c, c), 0)
        predicted_c = sum(n for (_, p), n in pairs.items() if p == c)
        true_c = sum(n for (t, _), n in pairs.items() if t == c)
        per_class[c] = {"precision": tp / predicted_c if predicted_c else 0.0,
                        "recall": tp / true_c if true_c else 0.0, "support": true_c}
    return {
        "rows": total,
        "accuracy": correct / total if total else 0.0,
        "macro_precision": sum(v["precision"] for v in per_class.values()) / len(seen) if seen else 0.0,
        "macro_recall": sum(v["recall"] for v in per_class.values()) / len(seen) if seen else 0.0,
        "per_class": per_class,
        "classes": order,
        "confusion_matrix": [[pairs.get((t, p), 0) for p in order] for t in order],
    }


def write_json(target: luigi.LocalTarget, document: dict) -> None:
    Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    with target.temporary_path() as tmp:
        Path(tmp).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def write_chart(target: luigi.LocalTarget, report: dict, title: str) -> None:
    """Confusion matrix (counts) and per-class precision/recall bars, as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    classes = report["classes"]
    matrix = report["confusion_matrix"]
    fig = Figure(figsize=(10, 4.5), dpi=100)
    left, right = fig.subplots(1, 2)
    image = left.imshow(matrix, cmap="Blues")
    left.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    left.set_yticks(range(len(classes)), classes)
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title("confusion matrix")
    peak = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            left.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    fig.colorbar(image, ax=left, shrink=0.8)
    names = list(report["per_class"])
    xs = range(len(names))
    right.bar([x - 0.2 for x in xs], [report["per_class"][c]["precision"] for c in names], 0.4, label="precision")
    right.bar([x + 0.2 for x in xs], [report["per_class"][c]["recall"] for c in names], 0.4, label="recall")
    right.set_xticks(list(xs), names, rotation=30, ha="right")
    right.set_ylim(0, 1.05)
    right.legend(loc="lower right")
    right.set_title(f"accuracy {report['accuracy']:.3f}, macro P {report['macro_precision']:.3f} / "
                    f"R {report['macro_recall']:.3f}")
    fig.suptitle(title)
    fig.tight_layout()
    Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    with target.temporary_path() as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
