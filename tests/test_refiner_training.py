"""Refiner training data and loop (tiny model, tiny synthetic set), and SAM teacher loading and
embedding distillation on a small randomly initialised ViT-B-shaped encoder saved to a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device.refine.prompts import PromptConfig, PromptGroups, auto_prompts
from server_train.models.refiner import build_refiner_tiny
from server_train.models.sam_teacher import infer_vit_config, load_sam_image_encoder, save_small_vit_teacher
from server_train.synth import SynthConfig, write_dataset
from server_train.training.refiner_data import degrade_mask, group_targets
from server_train.training.refiner_train import (
    RefinerTrainConfig,
    embedding_distill_loss,
    load_refiner,
    train_refiner,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(root, n=3, seed=5, config=SynthConfig(), progress=False)
    return str(root)


def test_group_targets_are_the_prompted_strands() -> None:
    inst = np.zeros((40, 40), np.int32)
    inst[5, :] = 1
    inst[:, 20] = 2
    inst[30, :] = 3
    pts = np.zeros((2, 3, 2), np.float32)
    labels = np.full((2, 3), -1.0, np.float32)
    pts[0, 0], labels[0, 0] = (3, 5), 1  # on strand 1
    pts[0, 1], labels[0, 1] = (10, 31), 1  # 1 px off strand 3: snapped to it
    pts[0, 2], labels[0, 2] = (20, 12), 0  # a negative on strand 2 adds nothing
    pts[1, 0], labels[1, 0] = (10, 15), 1  # off hair: empty target
    g = PromptGroups(pts, labels, pts[0, :2], pts[0, 2:])
    t = group_targets(g, inst)
    np.testing.assert_array_equal(t[0] > 0, np.isin(inst, [1, 3]))
    assert not t[1].any()


def test_degrade_mask_is_imperfect_but_close() -> None:
    inst = np.zeros((480, 640), np.int32)
    for i in range(10):
        inst[40 * i + 20 : 40 * i + 24, 50:600] = i + 1
    gt = inst > 0
    rng = np.random.default_rng(0)
    outs = [degrade_mask(gt, inst, rng) for _ in range(5)]
    assert any(not np.array_equal(o, gt) for o in outs)
    for o in outs:
        inter = (o & gt).sum()
        assert 2 * inter / (o.sum() + gt.sum()) > 0.5


def test_train_resume_and_load(synth: str, tmp_path) -> None:
    base = dict(data=synth, cache=str(tmp_path / "cache"), model="refiner_tiny", per_root=3, warmup=1)
    cfg = RefinerTrainConfig(**base, out=str(tmp_path / "run"), steps=4, ckpt_every=2)
    assert train_refiner(cfg, progress=False, stop_after=2).name == "last.pt"
    final = train_refiner(cfg, progress=False)
    model, ckpt = load_refiner(final)
    assert ckpt["step"] == 4 and ckpt["history"]
    with pytest.raises(ValueError, match="different config"):
        train_refiner(RefinerTrainConfig(**base, out=str(tmp_path / "run"), steps=5), progress=False)
    torch.manual_seed(cfg.seed)  # the same initialisation as the run: frozen parts must not move
    fresh = build_refiner_tiny()
    frozen = list(zip(model.encoder.frozen_parameters(), fresh.encoder.frozen_parameters(), strict=True))
    assert frozen and all(torch.equal(a, b) for a, b in frozen)
    assert not torch.equal(model.encoder.proj[0].weight, fresh.encoder.proj[0].weight)


def test_vit_teacher_loads_from_file_and_distils(synth: str, tmp_path) -> None:
    path = save_small_vit_teacher(tmp_path / "sam_vit_small.pth", embed_dim=64, depth=2, out_chans=32)
    teacher = load_sam_image_encoder(path)
    state = {k.removeprefix("image_encoder."): v for k, v in torch.load(path, weights_only=True).items()}
    cfg = infer_vit_config(state)
    assert (cfg["depth"], cfg["embed_dim"], cfg["num_heads"], cfg["img_size"]) == (2, 64, 4, 128)
    assert cfg["global_attn_indexes"] == (1,) and cfg["window_size"] == 14 and cfg["out_chans"] == 32
    with pytest.raises(ValueError, match="TinyViT"):
        infer_vit_config({"layers.0.weight": torch.zeros(1)})
    # Distillation step by step on one frame: the embedding moves toward the teacher's.
    torch.manual_seed(0)
    model = build_refiner_tiny()
    x = torch.randn(1, 3, 480, 640)
    opt = torch.optim.Adam([p for p in model.encoder.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = embedding_distill_loss(model.embed(x), teacher, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    # The training loop with --teacher-checkpoint runs the same loss.
    run = RefinerTrainConfig(
        data=synth,
        cache=str(tmp_path / "cache"),
        out=str(tmp_path / "kd"),
        model="refiner_tiny",
        per_root=3,
        steps=2,
        warmup=1,
        teacher_checkpoint=str(path),
    )
    _, ckpt = load_refiner(train_refiner(run, progress=False))
    assert ckpt["train_config"]["teacher_checkpoint"] == str(path)


def test_prompt_groups_feed_the_tiny_decoder() -> None:
    mask = np.zeros((480, 640), bool)
    mask[100:104, 50:600] = True
    g = auto_prompts(mask, PromptConfig(group_size=8, negatives=2))
    model = build_refiner_tiny().eval()
    with torch.no_grad():
        emb = model.embed(torch.zeros(1, 3, 480, 640))
        low, iou = model.decode(emb, torch.from_numpy(g.points), torch.from_numpy(g.labels), None)
    assert low.shape == (g.count, 1, 120, 160) and torch.isfinite(low).all()
