"""Synthetic nightly rows for a typed model: categories drawn by their training shares, booleans as true/false,
gaps in the training's missing share where the model accepts them; the rows pass the batch's own input rules."""
from __future__ import annotations

from datetime import date

from batch.schema import schema_of
from batch.synth import synthesize
from batch.table import read_table, validate, write_csv
from predmesh.types import CallLimits, ClassProfile, FeatureSpec, ModelInfo

ROWS = 20_000


def typed_info() -> ModelInfo:
    features = (
        FeatureSpec("tenure", 0.0, 72.0, 30.0, 20.0, (), kind="number", nullable=True, missing_share=0.1),
        FeatureSpec("contract", 0.0, 0.0, 0.0, 0.0, (), kind="category", nullable=True, missing_share=0.2,
                    categories=(("A", 0.6), ("B", 0.3), ("C", 0.1))),
        FeatureSpec("senior", 0.0, 1.0, 0.3, 0.0, (), kind="boolean", missing_share=0.05,  # not nullable: no gaps
                    categories=(("false", 0.7), ("true", 0.3))),
    )
    profiles = (ClassProfile("no", 0.7, (40.0, 0.0, 0.2), (10.0, 0.0, 0.0)),
                ClassProfile("yes", 0.3, (5.0, 0.0, 0.5), (2.0, 0.0, 0.0)))
    return ModelInfo("churn", "1", features, ("no", "yes"), "", {}, None, "", "", True, profiles,
                     limits=CallLimits(0, 0, 0))


def test_typed_synthetic_rows_follow_the_training_profile_and_pass_the_input_rules(tmp_path):
    info = typed_info()
    header, rows = synthesize(info, date(2026, 11, 20), ROWS)
    assert header == ["tenure", "contract", "senior", "true_label"]
    assert rows == synthesize(info, date(2026, 11, 20), ROWS)[1]  # seeded: a rerun is identical
    tenure, contract, senior = ([r[i] for r in rows] for i in range(3))
    assert abs(tenure.count(None) / ROWS - 0.1) < 0.01
    assert abs(contract.count(None) / ROWS - 0.2) < 0.01
    given = [c for c in contract if c is not None]
    assert set(given) == {"A", "B", "C"} and abs(given.count("A") / len(given) - 0.6) < 0.02
    assert set(senior) == {"true", "false"} and abs(senior.count("true") / ROWS - 0.3) < 0.02
    no = [t for t, label in zip(tenure, (r[3] for r in rows)) if label == "no" and t is not None]
    assert abs(sum(no) / len(no) - 40.0) < 1.0  # numbers still by class

    write_csv(tmp_path / "input.csv", header, rows)  # what GenerateData writes and Score reads
    checked = validate(read_table(tmp_path / "input.csv"), schema_of(info.features))
    assert not checked.rejects and len(checked.numbers) == ROWS
    assert checked.strings["contract"].count(None) == contract.count(None)


def test_a_code_is_drawn_from_its_training_values_not_from_a_normal(tmp_path):
    """A number the model takes only its training values of (FeatureSpec.categories on a number: an encoded plan
    code) is drawn by their shares; drawn from the class normal, 2.37 would be refused on every row."""
    features = (FeatureSpec("amount", 0.0, 100.0, 50.0, 10.0, ()),
                FeatureSpec("plan code", 1.0, 7.0, 3.0, 2.0, (), categories=(("1", 0.5), ("7", 0.3), ("2", 0.2))))
    profiles = (ClassProfile("no", 0.5, (40.0, 2.0), (5.0, 1.5)), ClassProfile("yes", 0.5, (60.0, 5.0), (5.0, 1.5)))
    info = ModelInfo("coded", "1", features, ("no", "yes"), "", {}, None, "", "", True, profiles,
                     limits=CallLimits(0, 0, 0))
    header, rows = synthesize(info, date(2026, 11, 20), 5_000)
    codes = [r[1] for r in rows]
    assert set(codes) == {1.0, 2.0, 7.0} and abs(codes.count(1.0) / len(codes) - 0.5) < 0.03
    write_csv(tmp_path / "input.csv", header, rows)
    checked = validate(read_table(tmp_path / "input.csv"), schema_of(info.features))
    assert not checked.rejects and len(checked.numbers) == 5_000
