"""Scalp-condition synthesis: level sets, rendering hooks, the labelled classification set."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from server_train.synth import SynthConfig, render_index
from server_train.synth.cli import register
from server_train.synth.condition_dataset import LABEL_KEYS, levels_for_index, write_condition_dataset
from server_train.synth.conditions import (
    AIHUB_FREQUENCIES,
    ConditionLevels,
    condition_config,
    sample_levels,
)

SMALL = SynthConfig(height=240, width=320, n_strands=(5, 40), p_annotations=0.0, p_letterbox=0.0)


def test_levels_are_validated() -> None:
    with pytest.raises(ValueError, match="erythema"):
        ConditionLevels(erythema=4)
    with pytest.raises(ValueError, match="sampling"):
        sample_levels(np.random.default_rng(0), "skewed")


def test_aihub_sampling_follows_the_tables() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_levels(rng).to_dict() for _ in range(4000)]
    for name, freq in AIHUB_FREQUENCIES.items():
        share = np.bincount([d[name] for d in draws], minlength=4) / len(draws)
        np.testing.assert_allclose(share, freq, atol=0.03)
    uni = [sample_levels(rng, "uniform").sebum for _ in range(2000)]
    np.testing.assert_allclose(np.bincount(uni, minlength=4) / 2000, 0.25, atol=0.04)


def test_condition_config_fixes_dandruff_and_density() -> None:
    cfg = condition_config(SMALL, ConditionLevels(dandruff=2, hair_loss=3, sebum=3))
    assert cfg.dandruff_probs == (0.0, 0.0, 1.0, 0.0)
    assert cfg.p_sebum == 0.0 and cfg.p_erythema == 0.0
    assert cfg.n_strands[1] < SMALL.n_strands[1]
    assert cfg.follicle_group_probs[-1] > SMALL.follicle_group_probs[-1]  # clumped hair


def test_conditions_are_deterministic_and_labelled() -> None:
    lv = ConditionLevels(1, 2, 3, 1)
    a, b = render_index(4, 1, SMALL, lv), render_index(4, 1, SMALL, lv)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.meta["conditions"] == lv.to_dict()
    assert set(np.unique(a.mask).tolist()) <= {0, 1}
    plain = render_index(4, 1, SMALL)
    assert "conditions" not in plain.meta


def _mean_over_seeds(levels: ConditionLevels, stat) -> float:
    return float(np.mean([stat(render_index(9, i, SMALL, levels)) for i in range(4)]))


def test_erythema_is_redder_with_level() -> None:
    def redness(s) -> float:
        skin = s.image[s.mask == 0].astype(np.float32)
        return float(np.mean(skin[:, 2] - skin[:, 0]))

    assert _mean_over_seeds(ConditionLevels(erythema=3), redness) > _mean_over_seeds(ConditionLevels(), redness) + 10


def test_hair_loss_lowers_the_count() -> None:
    def count(s) -> float:
        return float(s.count)

    assert _mean_over_seeds(ConditionLevels(hair_loss=3), count) < 0.5 * _mean_over_seeds(ConditionLevels(), count)


def test_dandruff_adds_white_flakes() -> None:
    def white(s) -> float:  # share of white pixels brighter than their surroundings
        img = s.image.astype(np.float32)
        local = cv2.medianBlur(s.image, 15).astype(np.float32).mean(axis=2)
        return float(np.mean((img.min(axis=2) > 200) & (img.mean(axis=2) > local + 15)))

    assert _mean_over_seeds(ConditionLevels(dandruff=3), white) > _mean_over_seeds(ConditionLevels(), white)


def test_sebum_adds_yellow_shine() -> None:
    def shine(s) -> float:
        img = s.image.astype(np.float32)
        return float(np.mean(img[..., 2] - img[..., 0]) + np.mean(img))

    assert _mean_over_seeds(ConditionLevels(sebum=3), shine) > _mean_over_seeds(ConditionLevels(), shine)


def test_write_condition_dataset(tmp_path) -> None:
    out = write_condition_dataset(tmp_path / "c", 5, 3, SMALL, sampling="uniform")
    recs = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert len(recs) == 5
    for i, r in enumerate(recs):
        assert set(LABEL_KEYS) <= set(r)
        assert (out / "images" / f"{r['stem']}.jpg").is_file()
        assert {k: r[k] for k in ("dandruff", "sebum", "erythema", "hair_loss")} == levels_for_index(
            3, i, "uniform"
        ).to_dict()
    assert json.loads((out / "config.json").read_text())["sampling"] == "uniform"


def test_synth_cli_conditions(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["synth", "--n", "2", "--seed", "1", "--out", str(tmp_path / "s"), "--conditions", "aihub"]
    )
    assert args.func(args) == 0
    assert len((tmp_path / "s" / "labels.jsonl").read_text().splitlines()) == 2
    assert "condition frames" in capsys.readouterr().out
