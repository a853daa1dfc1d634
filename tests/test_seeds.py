"""Accuracy over seeds and the verdicts that use the spread (basisn/summary.py): the rules behind the tradeoff
table, its figure's error bars and CLAIMS rows 5, 10 and 12, on constructed results whose answer is known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from basisn.summary import (
    accuracy_claim,
    both_claim,
    bound_verdict,
    groups_claim,
    paired_verdict,
    seed_statistics,
    tradeoff_answer,
    tradeoff_table,
)

POINT = {"network": "resnet18", "crossbars": 64, "preset": "default"}


@pytest.mark.parametrize(
    ("mean", "spread", "bound", "verdict"),
    [
        (0.4, 0.1, 0.5, "met"),  # 0.5 <= 0.5
        (0.45, 0.1, 0.5, "within noise"),
        (0.55, 0.1, 0.5, "within noise"),
        (0.61, 0.1, 0.5, "missed"),
        (0.49, math.nan, 0.5, "met"),  # one seed: its value alone
        (0.51, math.nan, 0.5, "missed"),
    ],
)
def test_a_bound_is_met_missed_or_within_noise(mean, spread, bound, verdict):
    assert bound_verdict(mean, spread, bound) == verdict


def test_an_option_beats_another_only_beyond_the_spread_of_the_paired_differences():
    assert paired_verdict([0.5, 0.6, 0.4]) == "ahead"
    assert paired_verdict([-0.5, -0.6, -0.4]) == "behind"
    assert paired_verdict([0.5, -0.3, 0.1]) == "within noise"  # mean 0.1 < sd 0.4
    assert paired_verdict([0.5]) == "untested"


def results(losses: dict[tuple[str, int], list[float]], dense=(0.92, 0.91, 0.93)) -> pd.DataFrame:
    """results.csv rows: (option, G) -> the loss in pp at seeds 0, 1, 2 against that seed's dense accuracy."""
    rows = []
    for (option, groups), values in losses.items():
        for seed, loss in enumerate(values):
            rows.append(
                dict(
                    key=f"G{groups}-b4-{option}-full",
                    seed=seed,
                    groups=groups,
                    coef_bits=4,
                    option=option,
                    schedule="full",
                    dense_accuracy=dense[seed],
                    accuracy=dense[seed] - loss / 100,
                    accuracy_minus_dense_pp=-loss,
                )
            )
    return pd.DataFrame(rows)


def costs(keys, ratio: float = 0.05) -> pd.DataFrame:
    columns = ("cycles_ratio_best", "edp_ratio_best", "cycles_ratio", "edp_ratio", "cycles_ratio_ideal")
    columns += ("edp_ratio_ideal", "energy_ratio_best", "latency_ratio_best")
    return pd.DataFrame(
        [
            dict(key=k, network="resnet18", n_crossbars=64, preset="default", **dict.fromkeys(columns, ratio))
            for k in keys
        ]
    )


def table(losses, ratio=0.05, bound=1.0) -> pd.DataFrame:
    frame = results(losses)
    return tradeoff_table(frame, costs(frame["key"].unique(), ratio), POINT, bound)


def test_seed_statistics_pair_each_seed_with_its_own_dense_baseline():
    stats = seed_statistics(results({("learned", 4): [0.2, 0.4, 0.6]})).iloc[0]
    assert stats["seeds"] == 3
    assert stats["accuracy_loss_pp"] == pytest.approx(0.4)
    assert stats["accuracy_loss_pp_sd"] == pytest.approx(0.2)
    assert stats["accuracy_loss_pp_min"] == pytest.approx(0.2) and stats["accuracy_loss_pp_max"] == pytest.approx(0.6)
    assert stats["dense_accuracy"] == pytest.approx(0.92) and stats["dense_accuracy_sd"] == pytest.approx(0.01)
    # the accuracies differ by more than the losses do: the spread of the loss is the paired one
    assert stats["accuracy_sd"] * 100 > stats["accuracy_loss_pp_sd"]


def test_the_table_judges_accuracy_with_the_spread_and_compares_options_paired():
    t = table(
        {
            ("learned", 4): [0.7, 0.8, 0.9],  # 0.8 +- 0.1: met against 1 pp
            ("fixed", 4): [0.9, 1.1, 1.3],  # 1.1 +- 0.2: within noise
            ("learned", 8): [1.9, 2.0, 2.1],  # missed
            ("fixed", 8): [2.0, 1.9, 2.3],
        }
    ).set_index("key")
    assert t.loc["G4-b4-learned-full", "accuracy_verdict"] == "met"
    assert t.loc["G4-b4-fixed-full", "accuracy_verdict"] == "within noise"
    assert t.loc["G8-b4-learned-full", "accuracy_verdict"] == "missed"
    assert bool(t.loc["G4-b4-learned-full", "meets_accuracy"]) and not t.loc["G4-b4-fixed-full", "meets_accuracy"]
    assert t.loc["G4-b4-learned-full", "vs_fixed"] == "ahead"  # 0.2, 0.3, 0.4 better: mean 0.3 > sd 0.1
    assert t.loc["G8-b4-learned-full", "vs_fixed"] == "within noise"  # 0.1, -0.1, 0.2
    assert t.loc["G4-b4-learned-full", "vs_fixed_pp"] == pytest.approx(0.3)


def test_claims_row_5_says_up_to_which_g_the_bound_is_met_and_where_it_is_noise():
    t = table({("learned", 2): [0.3, 0.4, 0.5], ("learned", 4): [0.8, 1.0, 1.2], ("learned", 8): [2, 2.1, 2.2]})
    measured, verdict = groups_claim(t, "learned")
    assert verdict == "within 1 pp up to G = 2; within noise of 1 pp at G = 4"
    assert "G = 4: -1.00 ± 0.20 pp (3 seeds)" in measured
    t = table({("learned", 2): [1.3, 1.4, 1.5], ("fixed", 2): [1.3, 1.5, 1.4]})
    measured, verdict = groups_claim(t, "learned")
    assert verdict == "within 1 pp at no G > 1"
    assert "the difference is within the spread of the seeds" in measured


def test_claims_row_10_uses_the_seeds_of_the_g1_fine_tune():
    t = table({("learned", 1): [0.8, 1.0, 1.2]})
    dense = pd.DataFrame(dict(seed=[0, 1, 2], dense_accuracy=[0.92, 0.91, 0.93]))
    text, word = accuracy_claim(t, dense, 1.0)
    assert word == "within noise of"
    assert "dense 92.00% ± 1.00%" in text and "-1.00 ± 0.20 pp (3 seeds)" in text
    assert accuracy_claim(table({("learned", 1): [0.2, 0.3, 0.4]}), dense, 1.0)[1] == "within"
    assert accuracy_claim(table({("learned", 1): [1.5, 1.6, 1.7]}), dense, 1.0)[1] == "beyond"
    assert accuracy_claim(table({("learned", 4): [0.2, 0.3, 0.4]}), dense, 1.0) is None


def test_claims_row_12_needs_the_accuracy_met_with_its_spread():
    assert both_claim(table({("learned", 4): [0.7, 0.8, 0.9]}, ratio=0.005)).startswith("holds")
    assert both_claim(table({("learned", 4): [0.8, 1.0, 1.2]}, ratio=0.005)).startswith("within noise")
    assert both_claim(table({("learned", 4): [0.7, 0.8, 0.9]}, ratio=0.05)).startswith("not reproduced")
    answer = tradeoff_answer(table({("learned", 4): [0.7, 0.8, 0.9], ("fixed", 4): [1.7, 1.8, 1.9]}), POINT, "learned")
    assert any("`learned` beats the fixed mask by more than the spread" in line for line in answer)
