"""SQLite results store."""
import pytest

from acetest_ml.errors import UserError
from acetest_ml.model import AbstractInput, DTypeValue, TensorDesc
from acetest_ml.store import Store


def _ai(i):
    return AbstractInput("tf.raw_ops.Add", {"x": TensorDesc("float32", (i, 2), -1.0, 1.0),
                                             "T": DTypeValue("float32"), "n": i, "l": [1, 2]},
                         value_seed=i, solved=["x"], origin={"set": "s"})


def test_round_trip_and_counts(tmp_path):
    with Store(str(tmp_path)) as st:
        st.add("api", 7, 0, _ai(1), outcome="pass", duration=0.1)
        st.add("api", 7, 1, _ai(2), decision="discard", score=0.1)
        st.add("api", 7, 2, _ai(3), outcome="crash", signature="SIGABRT: x")
        st.add("api", 7, 2, _ai(9), outcome="pass")  # same index again: ignored
        assert st.next_index("api", 7) == 3
        assert st.count_executed("api") == 2
        recs = list(st.records("api"))
        assert [r.idx for r in recs] == [0, 1, 2]
        assert recs[0].input.dumps() == _ai(1).dumps()
        assert recs[1].decision == "discard" and recs[1].outcome is None and not recs[1].executed
        assert st.outcome_counts("api")["crash"] == 1
    # reopened: everything is still there
    with Store(str(tmp_path), create=False) as st:
        assert st.count_executed("api", 7) == 2
        assert st.apis() == ["api"]


def test_missing_store_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        Store(str(tmp_path / "nothing"), create=False)


def test_corrupt_store_is_user_error(tmp_path):
    (tmp_path / "runs.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable SQLite"):
        Store(str(tmp_path))


def test_abstract_input_json_round_trip():
    ai = AbstractInput("a", {"t": TensorDesc("int32", (2, 3), 0, 4, values=(1, 2, 3, 4, 5, 6)),
                             "f": float("inf"), "d": DTypeValue("bfloat16"),
                             "ts": [TensorDesc("float32", ())]})
    back = AbstractInput.loads(ai.dumps())
    assert back == ai
    assert back.args["t"].numel == 6 and back.args["ts"][0].rank == 0
