"""The RLlib benchmark (stacked module against one module per agent) on a tiny case."""

from __future__ import annotations

import math

import pytest

from cosim.cli import build_parser
from experiments.bench.common import machine_info
from experiments.bench.rl import END, MARK, Config, Result, main, markdown, measure


def test_both_contenders_sample_whole_episodes_and_learn(ray_cluster):
    """4 agents, 2-step episodes: each timed iteration of each contender samples one
    episode (8 agent steps), every module learns with finite losses, and the table
    reports both with their ratio."""
    cfg = Config(agents=(4,), steps=2, repeats=2, builds=1, forward_calls=2)
    row = measure(4, cfg)
    assert row.batch == 8 and row.trained()
    for side, modules in ((row.stacked, 1), (row.peer, 4)):
        assert side.modules == modules and side.finite_losses
        assert side.agent_steps == [8, 8] and side.env_steps == [2, 2]
        # two minibatches of T rows per agent (RLlib adds a bootstrap row per episode)
        assert side.rows_trained == [16, 16]
        assert len(side.build_s) == 1 and len(side.forward_ms) == 2
        for key in ("sample_s", "rollout_s", "env_s", "metrics_s", "learn_s", "batch_s",
                    "iteration_s"):
            assert len(getattr(side, key)) == 2
            assert all(t > 0 and math.isfinite(t) for t in getattr(side, key))
        for sample, rollout, env, metrics, learn, batch, wall in zip(
                side.sample_s, side.rollout_s, side.env_s, side.metrics_s, side.learn_s,
                side.batch_s, side.iteration_s):
            assert env < rollout and rollout + metrics < sample and batch < learn
            assert sample + learn == pytest.approx(wall)
    assert set(row.ratio) == {"build", "forward", "sample", "learn", "iteration"}
    assert all(r > 0 for r in row.ratio.values())
    table = markdown(Result(cfg, machine_info("cpu"), [row], seconds=1.0))
    assert table.startswith(MARK) and table.rstrip().endswith(END)
    assert "| 4 | stacked |" in table and "| 4 | peer |" in table
    assert "Both trained: yes" in table and "Target not measured" in table


def test_the_cli_knows_the_benchmark():
    args = build_parser().parse_args(["bench", "rl", "--quick"])
    assert args.func is main and args.quick
