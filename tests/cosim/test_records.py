"""Record tables from buffered chunks: the joined (small) and zero-copy (big) paths give
the tables Arrow's own concatenation gives, and the files read back alike."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim import records
from cosim.records import RunFolder, arrow_table

TIME = np.arange(10) * np.timedelta64(900, "s") + np.datetime64("2024-06-01T00:00:00")


def _chunks(steps: range, rows: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"step": np.full(rows, s), "household": np.arange(rows),
             "kw": rng.normal(size=rows), "bus": np.array([f"b{s * 7}"] * rows),
             "ok": rng.random(rows) > 0.5} for s in steps]


def _reference(chunks: list[dict[str, np.ndarray]]) -> pa.Table:
    """Arrow's own join of one table per chunk."""
    return pa.concat_tables([pa.table(c) for c in chunks], promote_options="permissive")


@pytest.mark.parametrize("join_bytes", [records.JOIN_BYTES, 0], ids=["joined", "zero-copy"])
def test_a_table_is_the_chunks_in_order(monkeypatch: pytest.MonkeyPatch,
                                        join_bytes: int) -> None:
    monkeypatch.setattr(records, "JOIN_BYTES", join_bytes)
    chunks = _chunks(range(4))
    table = arrow_table(chunks, 0, 3, TIME)
    assert table.column_names == ["step", "time", "household", "kw", "bus", "ok"]
    assert table.drop_columns(["time"]).equals(_reference(chunks))
    np.testing.assert_array_equal(table.column("time").to_numpy().astype("datetime64[s]"),
                                  np.repeat(TIME[:4], 3))


def test_steps_outside_the_range_are_left_out() -> None:
    table = arrow_table(_chunks(range(5)), 1, 2, TIME)
    assert table.column("step").to_pylist() == [1, 1, 1, 2, 2, 2]
    assert arrow_table(_chunks(range(2)), 5, 6, TIME) is None


def test_an_int_then_a_float_is_promoted() -> None:
    """A column that is an int in one step and a float in the next (numpy would join
    them too, but the join is only taken for chunks alike)."""
    chunks = [{"step": np.array([0]), "x": np.array([1])},
              {"step": np.array([1]), "x": np.array([2.5])}]
    table = arrow_table(chunks, 0, 1, TIME)
    assert table.schema.field("x").type == pa.float64()
    assert table.column("x").to_pylist() == [1.0, 2.5]


def test_small_and_big_parts_read_back_alike(tmp_path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """A small table goes through a buffer, a big one straight into its file."""
    chunks = _chunks(range(6), rows=50)
    RunFolder(tmp_path / "small").write({("t", "a"): chunks}, 0, 5, TIME)
    monkeypatch.setattr(records, "JOIN_BYTES", 0)
    RunFolder(tmp_path / "big").write({("t", "a"): chunks}, 0, 5, TIME)
    name = "part-00000000-00000005-a.parquet"
    small = pq.read_table(tmp_path / "small" / "t" / name)
    assert small.equals(pq.read_table(tmp_path / "big" / "t" / name))
    assert small.drop_columns(["time"]).equals(_reference(chunks))
    assert not list((tmp_path / "small" / "t").glob("*.tmp"))


def test_parts_written_at_once_are_the_parts_written_one_by_one(tmp_path) -> None:
    """The final flush writes a part per CPU at once: the same files."""
    parts = {(table, actor): _chunks(range(6), rows=rows)
             for table, rows in (("t", 50), ("u", 3)) for actor in ("a", "b", "c")}
    RunFolder(tmp_path / "one").write(parts, 0, 5, TIME)
    RunFolder(tmp_path / "many").write(parts, 0, 5, TIME, threads=3)
    names = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert len(names) == 8  # two folders, six parts
    assert names == sorted(p.relative_to(tmp_path / "many")
                           for p in (tmp_path / "many").rglob("*"))
    for name in names:
        if name.suffix == ".parquet":
            assert pq.read_table(tmp_path / "one" / name).equals(
                pq.read_table(tmp_path / "many" / name))
