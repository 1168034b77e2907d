"""The server's prediction ids are the ones the database looks a request id up by (m0012): ids() and the bulk
prediction_ids() both give database.records.prediction_id_of(request_id): an ordered version-8 id for a request id
ending in a number of 1-15 digits (m0013), uuid5 of the one namespace for any other."""
from __future__ import annotations

import uuid

from database.records import PREDICTION_NAMESPACE, ordered, prediction_id_of, uuid5_id
from inference.scoring.convert import ids, prediction_ids


def test_the_server_derives_the_id_the_database_looks_keys_up_by():
    keys = ["a", "req-1", "req-2", "ünïcode ✓", "x" * 300, ids("")[0], "a01", "a1", "9" * 15, "9" * 16, "٣", "b٣"]
    assert [ids(k)[1] for k in keys] == prediction_ids(keys) == [prediction_id_of(k) for k in keys]
    assert prediction_id_of("a") == str(uuid.uuid5(PREDICTION_NAMESPACE, "a")) != str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                                                  "a"))


def test_a_request_id_ending_in_a_number_gets_an_ordered_version_8_id():
    got = [prediction_id_of(f"file-3f9a:{row}") for row in range(1000, 3000)]
    assert got == sorted(got) and len(set(got)) == len(got)  # consecutive rows: consecutive keys in the btree
    for pid in got[:3]:
        parsed = uuid.UUID(pid)
        assert str(parsed) == pid and parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert got[0].endswith("3e8") and got[1].endswith("3e9") and got[-1].endswith("bb7")  # 1000, 1001, 2999
    assert len({pid[:-3] for pid in got}) == 1  # one stem, one digit count (4 digits: 4 hex digits): one head
    # the digit count is part of the stem's hash: "a1" and "a01" are different requests, so different ids
    assert prediction_id_of("a1") != prediction_id_of("a01") and prediction_id_of("a1")[:30] != prediction_id_of(
        "a01")[:30]
    assert prediction_id_of("b-7") != prediction_id_of("c-7")
    assert ordered("x-1") and ordered("9" * 15) and ordered("1")


def test_other_request_ids_keep_their_uuid5_id():
    # no number at the end, more digits than 60 bits hold, or digits that are not ASCII: the scheme of before
    for rid in ("abc", "x" * 128, "1" * 16, "row-٣", "١٢٣", "7 "):
        assert not ordered(rid)
        assert prediction_id_of(rid) == uuid5_id(rid) == str(uuid.uuid5(PREDICTION_NAMESPACE, rid))
        assert uuid.UUID(prediction_id_of(rid)).version == 5


def test_a_bulk_calls_ids_from_its_prefix_and_row_numbers_are_the_request_ids_ids():
    """row_prediction_ids (the bulk path: request_id_prefix + row_numbers, vectorised) gives exactly what
    prediction_id_of gives each request id, whatever the digit counts, and falls back for a prefix ending in a digit
    or a number too long to be ordered."""
    from inference.scoring.convert import row_prediction_ids
    numbers = [0, 1, 9, 10, 99, 100, 12345, 10 ** 14 - 1, 10 ** 14, 10 ** 15 - 1, *range(1000, 1300)]
    for prefix in ("batch-iris-3f9a0c-", "x", "ünï ✓:", "a" * 100 + "-", "ends-in-7", "0"):
        assert row_prediction_ids(prefix, numbers) == [prediction_id_of(prefix + str(n)) for n in numbers]
    assert row_prediction_ids("p-", [10 ** 15, 7]) == [prediction_id_of("p-" + str(10 ** 15)), prediction_id_of("p-7")]
    assert row_prediction_ids("p-", [2 ** 64 - 1]) == [uuid5_id("p-" + str(2 ** 64 - 1))]
    assert row_prediction_ids("p-", []) == []


def test_an_ordered_id_keeps_most_of_its_bits_for_the_stem_hash():
    """A number takes only the hex digits its digit count needs, so a uuid or a server-made hex id that happens to
    end in a digit or three (a random stem each) keeps >= 110 bits of hash: ids of different stems collide no more
    often than random ones would, at any count of stored rows. Numbers of 15 digits keep 70."""
    from database.records import NUMBER_HEX
    assert NUMBER_HEX[1:] == (1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13)
    assert all(128 - 6 - 4 * NUMBER_HEX[w] >= 110 for w in (1, 2, 3))
    assert 128 - 6 - 4 * NUMBER_HEX[15] == 70
    hexes = [ids("")[0] for _ in range(2000)]  # server-made ids: 32 random hex digits
    tails = [prediction_id_of(h) for h in hexes if ordered(h)]  # ending in 1-15 digits: 62% of them
    assert len(tails) > 1000 and len(set(tails)) == len(tails) and all(uuid.UUID(t).version == 8 for t in tails)
    assert prediction_id_of("x-5") == prediction_id_of("x-5") and prediction_id_of("x-5")[-1] == "5"
    assert uuid.UUID(prediction_id_of("y-" + "9" * 15)).int & (16 ** 13 - 1) == 10 ** 15 - 1
