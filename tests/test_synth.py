"""Tests of the synthetic hair renderer (server_train.synth). Fast: small frames where the
property does not depend on size."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from server_train.synth import (
    MIN_VISIBLE_PX,
    TRUTH_KEYS,
    Sample,
    SynthConfig,
    contact_sheet,
    hard_variant,
    render,
    render_debug,
    render_index,
    write_dataset,
)
from server_train.synth.cli import register
from server_train.synth.dataset import config_for_index

SMALL = SynthConfig(height=240, width=320, n_strands=(5, 40))


def _check_sample(s: Sample, h: int, w: int) -> None:
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (h, w) and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask).tolist()) <= {0, 1}
    assert s.instances.shape == (h, w) and s.instances.dtype == np.int32
    n = s.count
    assert s.thickness_px.shape == (n,) and s.thickness_px.dtype == np.float32
    assert s.centres.shape == (n, 2) and s.centres.dtype == np.float32
    assert len(s.centrelines) == n
    for line in s.centrelines:
        assert line.ndim == 2 and line.shape[1] == 2 and line.dtype == np.float32
    json.dumps(s.meta)


@pytest.mark.parametrize("mode", ["scalp", "trimmed"])
def test_default_shapes_and_dtypes(mode: str) -> None:
    s = render(3, SynthConfig(mode=mode))
    _check_sample(s, 480, 640)
    assert s.meta["mode"] == mode
    assert s.count > 0


def test_deterministic_by_seed() -> None:
    a, b = render(11, SMALL), render(11, SMALL)
    c = render(12, SMALL)
    for x, y in [
        (a.image, b.image),
        (a.mask, b.mask),
        (a.instances, b.instances),
        (a.thickness_px, b.thickness_px),
        (a.centres, b.centres),
    ]:
        np.testing.assert_array_equal(x, y)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, c.image)
    d, e = render_index(5, 2, SMALL), render_index(5, 2, SMALL)
    np.testing.assert_array_equal(d.image, e.image)
    assert not np.array_equal(d.image, render_index(5, 3, SMALL).image)


def test_mask_never_contains_dandruff() -> None:
    # no hair at all, severe dandruff: flakes are drawn, the mask stays empty
    cfg = replace(
        SMALL, n_strands=(0, 0), p_long_hair_trimmed=0.0, dandruff_probs=(0.0, 0.0, 0.0, 1.0), p_letterbox=0.0
    )
    s, layers = render_debug(4, cfg)
    flakes = layers["dandruff"] > 0.5
    assert flakes.sum() > 50
    assert s.mask.sum() == 0 and s.count == 0
    assert np.mean(s.image[flakes]) > np.mean(s.image[~flakes]) + 5  # flakes are bright


def test_mask_with_hair_and_dandruff_is_the_geometry() -> None:
    cfg = replace(SMALL, dandruff_probs=(0.0, 0.0, 0.0, 1.0))
    s, layers = render_debug(8, cfg)
    # the mask is exactly the union of strand polygons, whatever was drawn underneath
    np.testing.assert_array_equal(s.mask, (layers["ids_all"] > 0).astype(np.uint8))
    flakes_only = (layers["dandruff"] > 0.5) & (layers["ids_all"] == 0)
    assert flakes_only.any() and not s.mask[flakes_only].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_matches_instances(seed: int) -> None:
    s = render(seed, SMALL)
    ids = np.unique(s.instances)
    ids = ids[ids > 0]
    assert len(ids) == s.count
    assert ids.tolist() == list(range(1, s.count + 1))
    px = np.bincount(s.instances.ravel(), minlength=s.count + 1)[1:]
    assert (px >= MIN_VISIBLE_PX).all()
    assert ((s.instances > 0) <= (s.mask > 0)).all()  # instances only on hair
    # centres lie near their own strand's centreline, inside the frame
    for c, line in zip(s.centres, s.centrelines, strict=True):
        assert np.min(np.linalg.norm(line - c, axis=1)) < 6.0
        assert 0 <= c[0] < 320 and 0 <= c[1] < 240


def test_thickness_matches_mask_width() -> None:
    # area / length of isolated strands is close to the labelled thickness
    cfg = replace(SMALL, n_strands=(1, 1), p_letterbox=0.0, p_thin=0.0)
    errs = []
    for seed in range(6):
        s = render(seed, cfg)
        if s.count != 1 or len(s.centrelines[0]) < 10:
            continue
        line = s.centrelines[0]
        length = np.linalg.norm(np.diff(line, axis=0), axis=1).sum()
        errs.append(s.mask.sum() / length - float(s.thickness_px[0]))
    assert errs and abs(float(np.median(errs))) < 1.5


def test_trimmed_mode_stubs() -> None:
    cfg = replace(SynthConfig(mode="trimmed"), p_long_hair_trimmed=0.0)
    s = render(21, cfg)
    assert s.count >= 5
    assert 1.5 <= float(s.thickness_px.min()) and float(s.thickness_px.max()) <= cfg.stub_width[1]
    assert float(np.median(s.thickness_px)) >= 4.0
    lengths = [np.linalg.norm(np.diff(c, axis=0), axis=1).sum() for c in s.centrelines]
    assert max(lengths) <= 112.0


def test_hard_variant_changes_the_mix() -> None:
    base = SynthConfig()
    hard = hard_variant(base)
    assert hard.p_thin > base.p_thin and hard.p_translucent > base.p_translucent
    assert hard.dandruff_probs[3] > base.dandruff_probs[3]
    s = render(1, replace(SMALL, hard=True))
    assert s.meta["hard"] is True
    _check_sample(s, 240, 320)


def test_mixed_schedule_is_about_thirty_percent() -> None:
    modes = [config_for_index(SynthConfig(), i, 0.3).mode for i in range(100)]
    assert modes.count("trimmed") == 30


def test_write_dataset_layout(tmp_path) -> None:
    out = write_dataset(tmp_path / "ds", 3, 7, SMALL, progress=False)
    for sub in ("images", "masks", "instances"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["000000.png", "000001.png", "000002.png"]
    recs = [json.loads(x) for x in (out / "truth.jsonl").read_text().splitlines()]
    assert len(recs) == 3
    for i, rec in enumerate(recs):
        assert set(TRUTH_KEYS) <= set(rec)
        assert rec["index"] == i and rec["seed"] == 7 and rec["stem"] == f"{i:06d}"
        assert len(rec["thickness_px"]) == rec["count"] == len(rec["centres"])
        assert len(rec["ends"]) == 2 * rec["count"]  # both ends of every counted strand
        ends = np.asarray(rec["ends"]).reshape(-1, 2)
        assert (ends >= 0).all() and (ends[:, 0] <= 639).all() and (ends[:, 1] <= 479).all()
    s = render_index(7, 1, SMALL)
    np.testing.assert_array_equal(cv2.imread(str(out / "images/000001.png")), s.image)
    m = cv2.imread(str(out / "masks/000001.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(m, s.mask * 255)
    inst = cv2.imread(str(out / "instances/000001.png"), cv2.IMREAD_UNCHANGED)
    assert inst.dtype == np.uint16
    np.testing.assert_array_equal(inst, s.instances)


def test_cli_register_and_run(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="scalpedge")
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(
        ["synth", "--n", "4", "--seed", "3", "--out", str(tmp_path / "m"), "--mode", "mixed", "--no-progress"]
    )
    assert args.func(args) == 0
    recs = [json.loads(x) for x in (tmp_path / "m/truth.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in recs].count("trimmed") == 1  # floor(4 * 0.3)
    assert "wrote 4 frames" in capsys.readouterr().out
    args = parser.parse_args(
        ["synth", "--n", "1", "--seed", "3", "--out", str(tmp_path / "h"), "--hard", "--no-progress"]
    )
    assert args.func(args) == 0
    assert json.loads((tmp_path / "h/truth.jsonl").read_text())["hard"] is True


def test_real_backgrounds(tmp_path) -> None:
    bg = np.full((120, 160, 3), (150, 170, 200), np.uint8)
    cv2.line(bg, (0, 0), (159, 119), (20, 20, 20), 3)  # a dark hair to inpaint away
    (tmp_path / "bg").mkdir()
    cv2.imwrite(str(tmp_path / "bg/a.png"), bg)
    cfg = replace(SMALL, backgrounds=str(tmp_path / "bg"), p_background_real=1.0)
    s = render(2, cfg)
    assert s.meta["background"] == "a.png"
    _check_sample(s, 240, 320)


def test_contact_sheet(tmp_path) -> None:
    items = [render(i, SMALL) for i in range(3)]
    p = contact_sheet(items, tmp_path / "sheet.png", cols=2, overlay_masks=True)
    img = cv2.imread(str(p))
    assert img.shape == (480, 640, 3)


def test_burned_in_annotations_never_change_the_labels() -> None:
    plain = render(21, replace(SynthConfig(), p_annotations=0.0))
    marked = render(21, replace(SynthConfig(), p_annotations=1.0))
    assert marked.meta["annotations"]
    assert np.array_equal(plain.mask, marked.mask)
    assert not np.array_equal(plain.image, marked.image)
