"""Scalp diffusion model: U-Net shapes and condition dropout, DDIM, training lowers the loss,
resume continues the step count, and two gloo DDP processes end with identical weights."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from server_train.diffusion.data import levels_from_area, load_frames
from server_train.diffusion.schedule import Schedule, ddim_sample
from server_train.diffusion.train import DiffusionConfig, ddp_worker, load_model, train
from server_train.diffusion.unet import NULL_LEVEL, CondUNet, UNetConfig, drop_conditions
from server_train.synth.condition_dataset import write_condition_dataset
from server_train.synth.config import SynthConfig

SMALL = SynthConfig(height=120, width=160, n_strands=(5, 20), p_annotations=0.0, p_letterbox=0.0)


@pytest.fixture(scope="module")
def cond_set(tmp_path_factory):
    return write_condition_dataset(tmp_path_factory.mktemp("dset") / "c", 8, 5, SMALL, sampling="uniform")


def test_unet_shapes_and_condition_effect() -> None:
    torch.manual_seed(0)
    net = CondUNet(UNetConfig(base=8, mults=(1, 2, 2)))
    torch.nn.init.normal_(net.out.weight, std=0.1)  # the zero-initialised output would hide the condition
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    a = net(x, t, torch.tensor([[0, 1, 2], [3, 3, 3]]))
    b = net(x, t, torch.full((2, 3), NULL_LEVEL))
    assert a.shape == x.shape
    assert not torch.allclose(a, b)  # levels change the prediction; the null token is its own input
    assert torch.allclose(a[:1], net(x[:1], t[:1], torch.tensor([[0, 1, 2]])), atol=1e-5)


def test_condition_dropout_rate() -> None:
    lv = torch.zeros(4000, 3, dtype=torch.long) + 2
    out = drop_conditions(lv, 0.25, torch.Generator().manual_seed(0))
    dropped = (out == NULL_LEVEL).all(1)
    assert ((out == 2).all(1) | dropped).all()  # a whole row is dropped or kept
    assert 0.22 < dropped.float().mean().item() < 0.28
    assert torch.equal(drop_conditions(lv, 0.0), lv)


def test_schedule_and_ddim() -> None:
    s = Schedule(100)
    assert s.abar[0] > 0.99 and s.abar[-1] < 1e-3 and bool((s.abar[1:] < s.abar[:-1]).all())
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    t, eps = torch.tensor([10, 80]), torch.randn(2, 3, 4, 4)
    assert torch.allclose(s.x0_from_eps(s.q_sample(x0, t, eps), t, eps), x0, atol=1e-4)
    assert s.timesteps(5, start=40) == [40, 32, 24, 16, 8]
    net = CondUNet(UNetConfig(base=8, mults=(1, 2)))
    out = ddim_sample(net, s, torch.tensor([[1, 2, 3]]), 8, steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 8, 8) and out.abs().max() <= 1


def test_levels_from_polygon_area() -> None:
    presence = np.array([[1, 1, 1], [0, 1, 0]], np.float32)
    area = np.array([[0.01, 0.05, 0.5], [0.0, 0.0, 0.3]], np.float32)
    assert levels_from_area(presence, area).tolist() == [[1, 2, 3], [0, 1, 0]]


def test_training_lowers_loss_and_resumes(cond_set, tmp_path) -> None:
    torch.set_num_threads(1)
    frames = load_frames([str(cond_set)], 20)
    assert frames.images.shape == (8, 20, 20, 3) and (frames.levels >= 0).all()
    cfg = DiffusionConfig(data=str(cond_set), out=str(tmp_path / "run"), preset="tiny", steps=60, save_every=20)
    paused = train(cfg, progress=False, stop_after=20)
    assert paused.name == "last.pt" and torch.load(paused, weights_only=False)["step"] == 20
    final = train(cfg, progress=False)  # resumes at step 20
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # one row per step: no step run twice, none skipped
    losses = [json.loads(r)["loss"] for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-15:]) < np.mean(losses[:10])
    model, sched, ck = load_model(final)
    assert ck["step"] == 60 and sched.T == 1000 and ck["config"]["size"] == 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_gloo_two_processes_agree(cond_set, tmp_path) -> None:
    cfg = DiffusionConfig(data=str(cond_set), out=str(tmp_path / "ddp"), preset="tiny", steps=4, save_every=2)
    torch.multiprocessing.spawn(ddp_worker, args=(2, cfg, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = CondUNet(UNetConfig(base=8, mults=(1, 2))).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], init[k]) for k in a)  # they trained, and agree
    assert torch.load(tmp_path / "ddp" / "final.pt", weights_only=False)["step"] == 4
