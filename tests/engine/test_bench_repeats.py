"""bench.susceptibility --first-repeat: a later repeat run alone is the full run's repeat."""

from __future__ import annotations

from typing import Any

import pytest


def test_first_repeat_runs_only_the_later_repeats_with_their_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import slidewise.engine.susceptibility.crossval as crossval
    from slidewise.bench import susceptibility as bench

    seeds: list[tuple[int, int]] = []

    def fake_folds(data: Any, methods: list[str], settings: Any, **kw: Any) -> list[dict]:
        seeds.append((kw["seed"], settings.seed))
        return [{"fold": 0, "n_query": 9, "rf": {"auc": kw["seed"] / 1e4}}]

    monkeypatch.setattr(crossval, "leave_blocks_out", fake_folds)
    common = ["--table", "t.csv", "--label", "l", "--x", "x", "--y", "y", "--json", "o.json"]
    args = bench.parse_args([*common, "--repeats", "3", "--seed", "7"])
    full = bench.evaluate(None, None, args, ["rf"])
    assert seeds == [(7, 7), (1007, 1007), (2007, 2007)]
    seeds.clear()
    later = bench.evaluate(
        None,
        None,
        bench.parse_args([*common, "--repeats", "3", "--seed", "7", "--first-repeat", "1"]),
        ["rf"],
    )
    assert seeds == [(1007, 1007), (2007, 2007)]
    assert later == full[1:]
    assert bench.fold_aucs(later, ["rf"]) == [{"fold": 0, "rf": 0.1007}, {"fold": 0, "rf": 0.2007}]
