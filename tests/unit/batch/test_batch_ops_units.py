"""Pure unit tests of the batch's column mapping, retry policy and --wait-stored bookkeeping (fakes, no server)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from batch import retry
from batch.mapping import MappingError, build, feature_columns
from batch.stored import Expected, wait_stored
from predmesh import DeadlineExceeded, InvalidArgument, PredmeshError, Unavailable

FEATURES = ("sepal_length", "sepal_width")


def test_mapping_from_options_and_a_file(tmp_path: Path):
    f = tmp_path / "map.csv"
    f.write_text('feature,column\nsepal_length,"Sepal length, cm"\n\n')
    mapping = build(["sepal_width = SW"], f)
    assert mapping == {"sepal_length": "Sepal length, cm", "sepal_width": "SW"}
    # a column that carries a mapped feature's own name is carried, not read
    assert feature_columns(["id", "Sepal length, cm", "SW", "sepal_length"], mapping, FEATURES, "iris") == [
        "id", "sepal_length", "sepal_width", "\x00carried:sepal_length"]


@pytest.mark.parametrize(("options", "text", "message"), [
    (["a=x", "a=y"], None, "the feature 'a' is mapped twice (--map 'a=x' to 'x', --map 'a=y' to 'y')"),
    (["a=x", "b=x"], None, "the column 'x' is mapped to two features ('a' and 'b'"),
    (["a"], None, "write feature=column"),
    (["=x"], None, "write feature=column"),
    ([], "feature;column\na;x\n", "the first line must be the header feature,column"),
    ([], "feature,column\na,x,y\n", "line 2 must be feature,column"),
    (["a=y"], "feature,column\na,x\n", "the feature 'a' is mapped twice (--map-file"),
])
def test_mappings_that_cannot_be_used(tmp_path: Path, options, text, message):
    f = None
    if text is not None:
        f = tmp_path / "map.csv"
        f.write_text(text)
    with pytest.raises(MappingError) as caught:
        build(options, f)
    assert message in str(caught.value)


def test_mapped_names_are_checked_against_the_model_and_the_input():
    with pytest.raises(MappingError, match="'petal' is not a feature of model iris"):
        feature_columns(["x"], {"petal": "x"}, FEATURES, "iris")
    with pytest.raises(MappingError, match=r"the input has no column 'SL' \(for 'sepal_length'\)"):
        feature_columns(["x"], {"sepal_length": "SL"}, FEATURES, "iris")


def test_retries_are_bounded_jittered_and_only_for_transient_statuses():
    policy = retry.RetryPolicy(retries=3, backoff_s=1.0, max_s=3.0)
    assert [policy.delay(a, lambda: 0.999) for a in range(4)] == pytest.approx([0.999, 1.998, 2.997, 2.997])
    waits: list[float] = []
    calls = iter([Unavailable("down"), DeadlineExceeded("slow"), "ok"])

    def flaky():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item
    assert retry.call(flaky, policy, "x", sleep=waits.append) == "ok" and len(waits) == 2

    def down():
        raise Unavailable("connection refused")
    with pytest.raises(Unavailable) as caught:
        retry.call(down, policy, "x", sleep=waits.append)
    assert retry.attempts_of(caught.value) == 4 and caught.value.code == grpc.StatusCode.UNAVAILABLE

    def refused():
        raise InvalidArgument("bad")
    waits.clear()
    with pytest.raises(InvalidArgument):
        retry.call(refused, policy, "x", sleep=waits.append)
    assert waits == []  # never retried


class _Page(SimpleNamespace):
    def __iter__(self):
        return iter(self.items)


class _Lister:
    """ListPredictions over a growing table: each call of `store()` makes more rows visible."""

    def __init__(self, request_ids: list[str]):
        self.rows = request_ids
        self.visible = 0
        self.calls = 0
        self.probes = 0

    def count_predictions(self, model: str, prefix: str, **kw: Any) -> int:  # a server from before CountPredictions
        raise PredmeshError("Method not found!", grpc.StatusCode.UNIMPLEMENTED)

    def list_predictions(self, **kw: Any):
        if kw.get("request_id"):  # the probe for one row (an index lookup)
            self.probes += 1
            found = kw["request_id"] in self.rows[:self.visible]
            return _Page(items=[SimpleNamespace(prediction=SimpleNamespace(request_id=kw["request_id"]))] * found,
                         next_page_token="")
        self.calls += 1
        start = int(kw["page_token"] or 0)
        page = self.rows[:self.visible][::-1][start:start + kw["page_size"]]
        token = str(start + len(page)) if start + len(page) < self.visible else ""
        items = [SimpleNamespace(prediction=SimpleNamespace(request_id=r)) for r in page]
        return _Page(items=items, next_page_token=token)


class _Counter(_Lister):
    """CountPredictions over the same growing table (no listing: it would fail the test)."""

    def count_predictions(self, model: str, prefix: str, **kw: Any) -> int:
        self.calls += 1
        return sum(r.startswith(prefix) for r in self.rows[:self.visible])

    def list_predictions(self, **kw: Any):
        if kw.get("request_id"):
            return super().list_predictions(**kw)
        raise AssertionError("listed every row; the count answers")


def test_wait_stored_counts_the_run_s_rows_until_all_are_stored(monkeypatch):
    ids = ["other-1"] + [f"batch-h-{n}" for n in range(1, 2501)]
    counter = _Counter(ids)
    clients = cast(Any, SimpleNamespace(first=counter))
    expected = Expected("batch-h-", range(1, 2501))

    def sleep(_: float) -> None:
        counter.visible = min(len(ids), counter.visible + 1000)
    monkeypatch.setattr("batch.stored.time.sleep", sleep)
    done, _ = wait_stored(clients, "iris", expected, datetime.now(UTC), wait_s=60, poll_s=0.01)
    # the last row (2500) is probed for while the rows arrive (0, 1000, 2000, 2501 visible), then ONE count
    assert done and expected.left == 0 and counter.probes == 4 and counter.calls == 1

    counter.rows = [f"batch-h-{n}" for n in range(1, 10)]
    late = Expected("batch-h-", range(1, 11))  # 10 is never stored
    done, _ = wait_stored(clients, "iris", late, datetime.now(UTC), wait_s=0.2, poll_s=0.05)
    assert not done and late.left == 1


def test_wait_stored_lists_against_a_server_without_count_and_ignores_others(monkeypatch):
    ids = [f"batch-h-{n}" for n in range(1, 2501)] + ["other-1", "batch-h-x"]
    lister = _Lister(ids)
    clients = cast(Any, SimpleNamespace(first=lister))
    expected = Expected("batch-h-", range(1, 2501))
    assert expected.left == 2500

    def sleep(_: float) -> None:
        lister.visible = min(len(ids), lister.visible + 1000)
    monkeypatch.setattr("batch.stored.time.sleep", sleep)
    done, _ = wait_stored(clients, "iris", expected, datetime.now(UTC), wait_s=60, poll_s=0.01)
    assert done and expected.left == 0 and lister.calls >= 3  # pages of 1000, listed again as rows arrive

    late = Expected("batch-h-", [1, 9999])  # 9999 is never stored
    done, _ = wait_stored(clients, "iris", late, datetime.now(UTC), wait_s=0.2, poll_s=0.05)
    assert not done and late.left == 1


def test_wait_stored_counts_again_when_the_last_row_came_before_others(monkeypatch):
    """The server's processes store on their own: the last row may be stored before rows of other chunks; the
    count then goes on until every row is there."""
    ids = [f"batch-h-{n}" for n in (2500, *range(1, 2500))]  # the last row first
    counter = _Counter(ids)
    clients = cast(Any, SimpleNamespace(first=counter))
    expected = Expected("batch-h-", range(1, 2501))
    counter.visible = 1

    def sleep(_: float) -> None:
        counter.visible = min(len(ids), counter.visible + 1000)
    monkeypatch.setattr("batch.stored.time.sleep", sleep)
    done, _ = wait_stored(clients, "iris", expected, datetime.now(UTC), wait_s=60, poll_s=0.01)
    assert done and expected.left == 0 and counter.probes == 1 and counter.calls == 4  # 1, 1001, 2001, 2500


def test_a_feature_named_with_spaces_around_is_read_from_the_trimmed_header():
    """The CSV header is read trimmed, but `predmesh train` keeps a column's spaces: a model trained on a header
    "Total Charges , Contract" could not score that very file ("the input lacks the feature column(s) Total
    Charges ,  Contract of the model (it has …, Total Charges, Contract, …)")."""
    features = ("Total Charges ", " Contract", "tenure")
    assert feature_columns(["id", "Total Charges", "Contract", "tenure"], {}, features, "m") == [
        "id", "Total Charges ", " Contract", "tenure"]
    # two columns that trim to the feature's text: neither is guessed
    assert feature_columns(["Contract", "Contract\u00a0", "tenure"], {}, (" Contract", "tenure"), "m") == [
        "Contract", "Contract\u00a0", "tenure"]


def test_a_retried_matrix_call_no_longer_says_its_keys_are_new():
    """The first send of a chunk may have been stored before its answer was lost: a retry's keys are looked up."""
    from batch.scoring import _Retrying

    sent: list[bool] = []

    class Flaky:
        def predict_matrix(self, *args, new_keys=False, **kwargs):
            sent.append(new_keys)
            if len(sent) < 3:
                raise Unavailable("connection reset")
            return "answer"

    client = _Retrying(cast(Any, Flaky()), retry.RetryPolicy(retries=3, backoff_s=0.001, max_s=0.001))
    assert client.predict_matrix("iris", ["a"], [1.0], new_keys=True) == "answer"
    assert sent == [True, False, False]
    sent.clear()
    assert client.predict_matrix("iris", ["a"], [1.0], new_keys=True) == "answer"  # a new call: new again
    assert sent == [True, False, False]
