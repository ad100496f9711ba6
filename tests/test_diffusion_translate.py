"""DiffuseIT-M with a real tiny diffusion model: the hair region is the source's own (masked),
not (unmasked); augmentation is reproducible from its provenance; translation metrics; CLI
errors on bad targets and missing files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from device.capture.imageio import read_frame
from device.cli import main
from server_train.diffusion.augment import (
    augment,
    inverse_targets,
    perturb,
    rarity_sources,
    severe_targets,
    sha256_of,
)
from server_train.diffusion.cli import parse_targets
from server_train.diffusion.data import load_frames, to_tensor
from server_train.diffusion.features import GuidanceFeatures
from server_train.diffusion.quality import PSNR_CAP, dice, evaluate_translation, kid
from server_train.diffusion.train import DiffusionConfig, load_model, train
from server_train.diffusion.translate import TranslateConfig, Translator, style_prototypes
from server_train.evaluation.loading import load_segmenter
from server_train.models.classifier import TINY_BLOCKS
from server_train.models.efficientnet_lite import EfficientNetLite
from server_train.synth.condition_dataset import write_condition_dataset
from server_train.synth.config import SynthConfig
from server_train.training.classifier_data import load_synthetic

SMALL = SynthConfig(height=120, width=160, n_strands=(5, 20), p_annotations=0.0, p_letterbox=0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tr")
    data = write_condition_dataset(root / "set", 6, 2, SMALL, sampling="aihub")
    ckpt = train(DiffusionConfig(data=str(data), out=str(root / "run"), preset="tiny", steps=10), progress=False)
    model, sched, ck = load_model(ckpt)
    torch.manual_seed(0)
    feats = GuidanceFeatures(EfficientNetLite(TINY_BLOCKS, 8, 32), None, "tiny", split=2, side=32)
    protos = style_prototypes(feats, load_frames([str(data)], 16), 16)
    cfg = TranslateConfig(ddim_steps=5, strength=0.8)
    tr = Translator(model, sched, 16, load_segmenter("blackhat_otsu"), feats, protos, cfg, str(ckpt))
    return tr, data, ckpt


def _hair_band(shape: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    m[40:70, :] = True  # a synthetic "hair" band across the frame
    return m


def test_masked_translation_keeps_hair_pixels(setup) -> None:
    tr, data, _ = setup
    frame = read_frame(data / "images" / "000000.jpg")
    m = _hair_band(frame.shape)
    masked = tr.translate(frame, {"sebum": 3}, seed=1, mask_full=m)
    assert masked.image.shape == frame.shape and masked.image.dtype == np.uint8
    assert np.array_equal(masked.image[m], frame[m])  # every hair pixel is the source's
    assert (masked.image[~m] != frame[~m]).any()  # the scalp did change
    ms = masked.mask_small[0, 0] > 0
    assert torch.equal(masked.small[0][:, ms], to_tensor(frame, 16)[0][:, ms])  # the final step's hair region
    unmasked = tr.translate(frame, {"sebum": 3}, seed=1, mask_full=m, masked=False)
    assert not np.array_equal(unmasked.image[m], frame[m])
    assert dice(m, m) == 1.0 and dice(m, ~m) == 0.0
    again = tr.translate(frame, {"sebum": 3}, seed=1, mask_full=m)
    assert np.array_equal(again.image, masked.image)  # same seed, same output


def test_augment_reproduces_from_provenance(setup, tmp_path) -> None:
    tr, data, ckpt = setup
    a = augment(tr, data, tmp_path / "a", n=3, seed=4, command="test")
    b = augment(tr, data, tmp_path / "b", n=3, seed=4, command="test")
    names = sorted(p.name for p in (a / "images").iterdir())
    assert len(names) == 6 + 3
    assert all((a / "images" / n).read_bytes() == (b / "images" / n).read_bytes() for n in names)
    prov = [json.loads(r) for r in (a / "provenance.jsonl").read_text().splitlines()]
    assert [p["stem"] for p in prov] == ["aug_000000", "aug_000001", "aug_000002"]
    assert prov[0]["model_sha256"] == sha256_of(ckpt) and len(prov[0]["model_sha256"]) == 64
    row = prov[1]
    targets = {c: ["good", "mild", "moderate", "severe"].index(v) for c, v in row["target"].items()}
    again = tr.translate(read_frame(row["source"]), targets, seed=row["seed"])  # from the row alone
    ok, buf = cv2.imencode(".jpg", again.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok and buf.tobytes() == (a / "images" / "aug_000001.jpg").read_bytes()
    labels = load_synthetic(a)  # the classifier's reader takes the set
    assert len(labels.paths) == 9 and labels.levels[7].tolist() == [
        targets[c] for c in ("dandruff", "sebum", "erythema")
    ]
    other = augment(tr, data, tmp_path / "c", n=1, seed=5, command="test", copy=False)
    assert (other / "images" / "aug_000000.jpg").read_bytes() != (a / "images" / "aug_000000.jpg").read_bytes()


def test_augment_keeps_the_best_of_several_translations(setup, tmp_path) -> None:
    """With an acceptance grader (a real ONNX condition graph), each draw keeps the first
    translation the grader puts at the target level, else the most probable of its tries; the
    provenance seed reproduces the kept frame, and one try is the plain augmentation."""
    from device.models.classifiers import SeverityClassifier
    from export.classifier_export import export_condition_classifier
    from server_train.diffusion.augment import Acceptance, attempt_seed, frame_seed
    from server_train.models.classifier import create_classifier

    tr, data, _ = setup
    torch.manual_seed(3)
    net = create_classifier("severity_tiny", pretrained=False).eval()
    with torch.no_grad():  # every condition present; sebum always severe, the others as random weights say
        net.presence.bias.fill_(20.0)
        net.levels.bias[7] = 20.0  # rows: condition-major, 4 levels each
    onnx_path = export_condition_classifier(net, tmp_path / "g.onnx")
    grader = SeverityClassifier.from_onnx(onnx_path)
    accept = Acceptance(grader, str(onnx_path), tries=3)
    out = augment(tr, data, tmp_path / "acc", n=5, seed=5, command="test", copy=False, balance="severe", accept=accept)
    prov = [json.loads(r) for r in (out / "provenance.jsonl").read_text().splitlines()]
    rows = [json.loads(r) for r in (out / "labels.jsonl").read_text().splitlines()]
    source_rows = {json.loads(r)["stem"]: json.loads(r) for r in (data / "labels.jsonl").read_text().splitlines()}
    raised = []
    for k, (p, row) in enumerate(zip(prov, rows, strict=True)):
        assert 1 <= p["tries"] <= 3 and p["seed"] in [attempt_seed(5, k, a) for a in range(p["tries"])]
        changed = [c for c in ("dandruff", "sebum", "erythema") if row[c] != source_rows[row["source"]][c]]
        target = {c: int(row[c]) for c in ("dandruff", "sebum", "erythema")}
        scores = []
        for a in range(p["tries"]):  # every try again, graded as the augmentation graded it
            again = tr.translate(read_frame(p["source"]), target, seed=attempt_seed(5, k, a))
            scores.append(accept.judge(again.image, target, changed))
            if a + 1 < p["tries"]:
                assert not scores[-1][0]  # an earlier try that hit would have been kept
        kept = [a for a in range(p["tries"]) if attempt_seed(5, k, a) == p["seed"]][0]
        if p["accepted"]:
            assert kept == p["tries"] - 1 and scores[kept][0]
        else:
            assert scores[kept][1] == max(sc for _, sc in scores) and not any(h for h, _ in scores)
        assert p["accept_score"] == round(scores[kept][1], 4)
        again = tr.translate(read_frame(p["source"]), target, seed=p["seed"])
        ok, buf = cv2.imencode(".jpg", again.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok and buf.tobytes() == (out / "images" / f"aug_{k:06d}.jpg").read_bytes()
        raised.append(changed[0])
    assert "sebum" in raised and set(raised) != {"sebum"}  # seed 5 raises sebum and others
    for p, c in zip(prov, raised, strict=True):  # sebum hits at the first try; the others miss (random heads)
        assert (p["tries"], p["accepted"]) == (1, True) if c == "sebum" else p["tries"] == 3
    info = json.loads((out / "config.json").read_text())["accept"]
    assert info["tries"] == 3 and info["grader_sha256"] == sha256_of(onnx_path)
    assert info["mean_tries"] == round(float(np.mean([p["tries"] for p in prov])), 3)
    one = augment(
        tr, data, tmp_path / "one", n=2, seed=2, command="test", copy=False, accept=Acceptance(grader, "g", 1)
    )
    plain = augment(tr, data, tmp_path / "plain", n=2, seed=2, command="test", copy=False)
    assert attempt_seed(2, 1, 0) == frame_seed(2, 1)
    for name in ("aug_000000.jpg", "aug_000001.jpg"):
        assert (one / "images" / name).read_bytes() == (plain / "images" / name).read_bytes()
    with pytest.raises(ValueError, match="tries"):
        Acceptance(grader, "g", 0)
    # redraw: a draw the grader does not accept is dropped and the next draw takes its place
    levels = np.asarray([[r[c] for c in ("dandruff", "sebum", "erythema")] for r in source_rows.values()])
    sebum_draws = [k for k, (si, t) in enumerate(severe_targets(levels, 10, 5)) if t["sebum"] > levels[si, 1]]
    redrawn = augment(
        tr, data, tmp_path / "re", n=2, seed=5, command="test", copy=False, balance="severe",
        accept=Acceptance(grader, "g", 1, redraw=True),
    )  # fmt: skip
    prov = [json.loads(r) for r in (redrawn / "provenance.jsonl").read_text().splitlines()]
    assert [p["draw"] for p in prov] == sebum_draws[:2] and all(p["accepted"] for p in prov)
    assert [p["seed"] for p in prov] == [frame_seed(5, k) for k in sebum_draws[:2]]
    info = json.loads((redrawn / "config.json").read_text())["accept"]
    assert info["draws"] == sebum_draws[1] + 1 and info["dropped"] == sebum_draws[1] - 1 and info["short_by"] == 0
    short = augment(
        tr, data, tmp_path / "short", n=2, seed=5, command="test", copy=False, balance="severe",
        accept=Acceptance(grader, "g", 1, redraw=True, max_draws=1),
    )  # fmt: skip
    assert json.loads((short / "config.json").read_text())["accept"]["short_by"] == 2 - sum(k < 2 for k in sebum_draws)


def test_inverse_targets_favour_rare_levels() -> None:
    levels = np.repeat(np.array([0, 1, 2, 3]), [60, 25, 10, 5])[:, None].repeat(3, 1)  # severe rare
    draws = inverse_targets(levels, 600, seed=0)
    share = np.bincount([t["sebum"] for _, t in draws], minlength=4) / 600
    assert share[3] > 0.45 and share[0] < 0.1 and share[3] > share[2] > share[1] > share[0]
    assert draws == inverse_targets(levels, 600, seed=0)


def test_severe_targets_raise_one_condition_and_keep_the_others() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 4, (200, 3))
    draws = severe_targets(levels, 300, seed=2)
    raised = []
    for src, target in draws:
        src_levels = dict(zip(("dandruff", "sebum", "erythema"), levels[src].tolist(), strict=True))
        changed = [c for c in target if target[c] != src_levels[c]]
        assert len(changed) == 1 and target[changed[0]] == 3  # one condition, from below severe to severe
        raised.append(changed[0])
    share = np.array([raised.count(c) for c in ("dandruff", "sebum", "erythema")]) / 300
    assert share.min() > 0.25  # each condition about a third of the draws
    assert draws == severe_targets(levels, 300, seed=2) and draws != severe_targets(levels, 300, seed=3)
    with pytest.raises(ValueError, match="already severe"):
        severe_targets(np.full((4, 3), 3), 1, seed=0)


def test_augment_severe_balance_labels_the_translated_frames(setup, tmp_path) -> None:
    tr, data, _ = setup
    out = augment(tr, data, tmp_path / "sev", n=2, seed=1, command="test", copy=False, balance="severe")
    rows = [json.loads(r) for r in (out / "labels.jsonl").read_text().splitlines()]
    prov = [json.loads(r) for r in (out / "provenance.jsonl").read_text().splitlines()]
    source_rows = {json.loads(r)["stem"]: json.loads(r) for r in (data / "labels.jsonl").read_text().splitlines()}
    for row, p in zip(rows, prov, strict=True):
        src = source_rows[row["source"]]
        changed = [c for c in ("dandruff", "sebum", "erythema") if row[c] != src[c]]
        assert len(changed) == 1 and row[changed[0]] == 3 and p["target"][changed[0]] == "severe"
    assert json.loads((out / "config.json").read_text())["balance"] == "severe"
    with pytest.raises(ValueError, match="unknown balance"):
        augment(tr, data, tmp_path / "bad", n=1, balance="even")


@pytest.mark.parametrize("name", ["severity_tiny", "severity_dense_tiny"])
def test_grader_features_give_level_logits_for_both_grader_kinds(name) -> None:
    from server_train.models.classifier import create_classifier

    torch.manual_seed(0)
    grader = create_classifier(name, pretrained=False).eval()
    feats = GuidanceFeatures(grader.backbone, grader, name, split=2, side=64)  # dense: >= k map cells
    x = torch.rand(2, 3, 24, 24) * 2 - 1
    spatial, pooled = feats.both(x)
    logits = feats.level_logits(pooled)
    assert spatial.ndim == 4 and logits is not None and logits.shape == (2, 3, 4)
    with torch.no_grad():
        direct = grader(feats._prep(x))[0]  # the grader's own level logits on the same input
    assert torch.allclose(logits, direct, atol=1e-5)


def test_rarity_sources_favour_frames_of_rare_levels() -> None:
    levels = np.repeat(np.array([0, 1, 2, 3]), [60, 25, 10, 5])[:, None].repeat(3, 1)
    drawn = levels[rarity_sources(levels, 600, seed=0), 0]
    share = np.bincount(drawn, minlength=4) / 600
    assert share[3] > share[2] > share[1] > share[0] and share[3] > 0.4  # 5% of the set, most of the draws
    assert rarity_sources(levels, 50, seed=1) == rarity_sources(levels, 50, seed=1)


@pytest.mark.parametrize("kind", ["noise", "augmix"])
def test_perturbation_baselines_keep_labels_and_record_provenance(setup, tmp_path, kind) -> None:
    _, data, _ = setup
    out = perturb(data, tmp_path / kind, kind, n=4, seed=3)
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    source_rows = {r["stem"]: r for r in rows if not r.get("generated")}
    generated = [r for r in rows if r.get("generated")]
    assert len(source_rows) == 6 and len(generated) == 4  # the set copied, then 4 new frames
    prov = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    changed, jpeg = [], []
    for row, p in zip(generated, prov, strict=True):
        src = source_rows[row["source"]]
        assert all(row[c] == src[c] for c in ("dandruff", "sebum", "erythema"))  # labels kept
        assert p["perturbation"] == kind and p["stem"] == row["stem"]
        a = read_frame(out / "images" / f"{row['stem']}.jpg").astype(int)
        b = read_frame(data / "images" / f"{row['source']}.jpg").astype(int)
        ok, enc = cv2.imencode(".jpg", b.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
        jpeg.append(np.abs(cv2.imdecode(enc, cv2.IMREAD_COLOR).astype(int) - b).mean())
        assert a.shape == b.shape
        changed.append(np.abs(a - b).mean())
    assert np.mean(changed) > 2 * np.mean(jpeg) + 0.5  # perturbed, not copied (beyond JPEG's own change)
    again = perturb(data, tmp_path / f"{kind}2", kind, n=4, seed=3)
    first = read_frame(out / "images" / "aug_000001.jpg")
    assert np.array_equal(first, read_frame(again / "images" / "aug_000001.jpg"))  # seeded
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(data, tmp_path / "x", "blur", n=1)


def test_kid_and_targets() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    assert abs(kid(a, b)) < 0.05 < kid(a, b + 1.0)
    assert parse_targets(["Sebum=severe", "dandruff=1"]) == {"sebum": 3, "dandruff": 1}
    for bad in (["scalp=severe"], ["sebum=awful"], ["sebum"], ["sebum=4"]):
        with pytest.raises(ValueError):
            parse_targets(bad)


def test_evaluate_translation_report(setup, tmp_path) -> None:
    tr, data, _ = setup
    fig = tmp_path / "grid.png"
    r = evaluate_translation(tr, data / "images", n=2, conditions=["sebum"], figure=str(fig))
    assert r["frames"] == 2 and r["translations"] == 2 and r["real_frames"] == 4
    for key in ("hair_dice", "hair_psnr_db", "target_hit_rate", "kid"):
        assert key in r and key in r["unmasked"]
    assert r["hair_psnr_db"] == PSNR_CAP > r["unmasked"]["hair_psnr_db"]  # hair copied vs not
    by = r["target_hit_rate_by_condition"]
    assert list(by) == ["sebum"] and by["sebum"] == r["target_hit_rate"]  # one condition: the same share
    assert cv2.imread(str(fig)).shape == (22 + 2 * 160, 3 * 160, 3)


def test_cli_errors(setup, tmp_path, capsys) -> None:
    _, data, ckpt = setup
    img = str(data / "images" / "000000.jpg")
    out = str(tmp_path / "o.png")
    assert main(["translate", img, "--target", "scalp=severe", "--out", out, "--model", str(ckpt)]) == 2
    assert "CONDITION" in capsys.readouterr().err
    assert main(["translate", img, "--target", "sebum=awful", "--out", out, "--model", str(ckpt)]) == 2
    assert main(["translate", str(tmp_path / "none.jpg"), "--target", "sebum=severe", "--out", out]) == 2
    missing = str(tmp_path / "nope.pt")
    assert main(["translate", img, "--target", "sebum=severe", "--out", out, "--model", missing]) == 2
    assert "no diffusion checkpoint" in capsys.readouterr().err
    assert main(["augment", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    missing_grader = ["--accept", str(tmp_path / "g.onnx"), "--model", str(ckpt)]
    assert main(["augment", "--data", str(data), "--out", str(tmp_path / "x"), *missing_grader]) == 2
    assert "no grader" in capsys.readouterr().err
    assert main(["augment", "--data", str(data), "--out", str(tmp_path / "x"), "--redraw", "--model", str(ckpt)]) == 2
    assert "--redraw needs --accept" in capsys.readouterr().err
    assert (
        main(["augment", "--data", str(data), "--out", str(tmp_path / "x"), "--perturb", "noise", *missing_grader]) == 2
    )
    assert not (tmp_path / "x").exists()
    assert not Path(out).exists()


def test_new_hair_outside_the_source_mask_is_cleared(setup) -> None:
    """The source frame's own strands outside a band mask count as "new" hair: clearing paints
    them out, leaves the band's pixels as they were, and does nothing with clear_rounds=0."""
    import dataclasses

    from server_train.diffusion.translate import hair_mask

    tr, data, _ = setup
    frame = read_frame(data / "images" / "000000.jpg")
    m = _hair_band(frame.shape)
    outside = ~hair_mask(m.astype(np.float32), 0.5, 2)

    def new_hair(img: np.ndarray) -> int:
        return int((hair_mask(tr.segmenter.segment(img).prob, 0.5, 0) & outside).sum())

    before = new_hair(frame)
    assert before > 0
    cleared = tr._clear_new_hair(frame, m)
    assert new_hair(cleared) < before / 2
    assert np.array_equal(cleared[m], frame[m])
    off = dataclasses.replace(tr.config, clear_rounds=0)
    tr_off = Translator(tr.model, tr.schedule, tr.size, tr.segmenter, tr.features, tr.prototypes, off)
    assert np.array_equal(tr_off._clear_new_hair(frame, m), frame)


def test_frames_are_drawn_at_the_crop_size_or_the_resolution_asked(setup, tmp_path) -> None:
    """The tiny run learned from 16 px crops of frames loaded at 20 px: a loaded translator draws
    the whole frame at 16 px, or at the side asked (20: the scale it learned), and refuses a side
    its U-Net cannot halve."""
    from server_train.diffusion.translate import draw_size

    tr, data, ckpt = setup
    run = load_model(ckpt)[2]["config"]
    assert (run["size"], run["load"]) == (16, 20)
    assert draw_size(None, run) == 16 and draw_size(20, run) == 20
    with pytest.raises(ValueError, match="multiple of 2"):
        draw_size(21, run)
    frame = read_frame(data / "images" / "000000.jpg")
    m = _hair_band(frame.shape)
    for resolution, side in ((None, 16), (20, 20)):
        loaded = Translator.load(ckpt, TranslateConfig(ddim_steps=3, resolution=resolution), segmenter="blackhat_otsu")
        assert loaded.size == side
        out = loaded.translate(frame, {"dandruff": 3}, seed=0, mask_full=m)
        assert out.small.shape == (1, 3, side, side) and out.mask_small.shape == (1, 1, side, side)
        assert np.array_equal(out.image[m], frame[m])
