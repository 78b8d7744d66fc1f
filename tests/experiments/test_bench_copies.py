"""`cosim bench copies` on a small case: the contenders agree on the rows they time."""

from __future__ import annotations

from experiments.bench.copies import END, MARK, markdown, run


def test_copies_and_separate_simulations_agree_on_the_timed_rows():
    result = run([1, 2], separate_max=2, repeats=2, command="test")  # both orders
    one, two = result.rows
    assert (one.copies, one.households, two.households) == (1, 6, 12)
    # the same actions give the same bills, household for household
    assert one.bill_diff == 0.0 and two.bill_diff == 0.0
    assert two.copies_per_s > 0 and two.separate_per_s > 0 and two.ratio > 0
    assert {"decide", "clear", "physics", "settle"} <= set(two.phases_ms)
    table = markdown(result)
    assert table.startswith(MARK) and table.rstrip().endswith(END)
    assert "One copy:" in table and "| 2 | 12 |" in table
    assert "One copy's shard phases" in table
