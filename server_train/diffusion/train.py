"""Train the conditional scalp diffusion model (DDPM epsilon loss, classifier-free condition
dropout, EMA weights), resumable, on one CPU or on several GPUs through ``torchrun``.

Presets (``DiffusionConfig.preset``; options left None take the preset's value):

- ``tiny``: 16x16 crops, 2-level U-Net of base 8 (tests, seconds);
- ``cpu``: 48x48 crops of frames resized to 64x64, U-Net base 32, mults 1,2,2,4 (2.16 M
  parameters), batch 12, 3000 steps (about 45 min on one shared core);
- ``gpu``: 96x96 crops of 120x120 frames, base 64, mults 1,2,3,4 (9.9 M parameters),
  batch 64 per process, 100k steps. Multi-GPU (one process per GPU, NCCL; gloo on CPU)::

      torchrun --nproc_per_node=4 -m server_train.diffusion.train --data D1,D2 --out RUN --config gpu

  (or ``scalpedge train diffusion`` under ``torchrun``: ranks come from the environment).

Run folder: ``last.pt`` every ``save_every`` steps (raw and EMA weights, optimiser, step;
training resumes from it with the same data stream), ``final.pt`` (EMA weights, configs) at the
end, ``log.jsonl`` (step, loss). Batches are drawn from ``numpy.random.default_rng([seed, rank,
step])``, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from server_train.diffusion.data import load_frames
from server_train.diffusion.schedule import Schedule
from server_train.diffusion.unet import CondUNet, UNetConfig, drop_conditions

__all__ = ["DiffusionConfig", "PRESETS", "train", "load_model", "ddp_worker"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"size": 16, "load": 20, "base": 8, "mults": (1, 2), "batch": 4, "steps": 20, "lr": 2e-3, "ema": 0.9},
    "cpu": {
        "size": 48,
        "load": 64,
        "base": 32,
        "mults": (1, 2, 2, 4),
        "batch": 12,
        "steps": 3000,
        "lr": 3e-4,
        "ema": 0.999,
    },
    "gpu": {
        "size": 96,
        "load": 120,
        "base": 64,
        "mults": (1, 2, 3, 4),
        "batch": 64,
        "steps": 100000,
        "lr": 2e-4,
        "ema": 0.9999,
    },
}


@dataclass
class DiffusionConfig:
    """data: comma-separated folders (``server_train.diffusion.data``); out: run folder;
    preset: tiny|cpu|gpu; the rest override the preset when not None."""

    data: str = ""
    out: str = "runs/diffusion"
    preset: str = "cpu"
    steps: int | None = None
    batch: int | None = None
    lr: float | None = None
    size: int | None = None
    load: int | None = None
    base: int | None = None
    mults: tuple[int, ...] | None = None
    ema: float | None = None
    cond_drop: float = 0.15
    timesteps: int = 1000
    warmup: int = 200
    seed: int = 0
    save_every: int = 250
    limit: int | None = None
    threads: int = 1

    def resolved(self) -> dict[str, Any]:
        """Every field, preset values filled in (JSON-friendly)."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown diffusion preset {self.preset!r}; choose from {sorted(PRESETS)}")
        d = {**dataclasses.asdict(self), **{k: v for k, v in PRESETS[self.preset].items()}}
        d.update({k: v for k, v in dataclasses.asdict(self).items() if v is not None and k in PRESETS[self.preset]})
        d["mults"] = list(d["mults"])
        return d


def _dist_env() -> tuple[int, int]:
    """(rank, world) from torchrun's environment; initialises the process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world)
    return rank, world


def _unet_config(c: dict[str, Any]) -> UNetConfig:
    return UNetConfig(base=c["base"], mults=tuple(c["mults"]), cond_drop=c["cond_drop"])


def _train(cfg: DiffusionConfig, progress: bool = True, stop_after: int | None = None) -> tuple[Path, CondUNet]:
    c = cfg.resolved()
    rank, world = _dist_env()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(c["threads"])
    out = Path(c["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(c["seed"])  # the same initial weights on every rank
    ucfg = _unet_config(c)
    model = CondUNet(ucfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.0)
    step = 0
    if (out / "last.pt").is_file():
        ck = torch.load(out / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(ck["raw"])
        ema.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = int(ck["step"])
    net: torch.nn.Module = DistributedDataParallel(model) if world > 1 else model
    frames = load_frames([f for f in c["data"].split(",") if f], c["load"], c["limit"])
    sched = Schedule(c["timesteps"])
    end = c["steps"] if stop_after is None else min(c["steps"], stop_after)
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    t0 = time.time()
    while step < end:
        rng = np.random.default_rng([c["seed"], rank, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0, lv = frames.batch(c["batch"], c["size"], rng)
        lv = drop_conditions(lv, c["cond_drop"], gen)
        t = torch.randint(0, sched.T, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sched.q_sample(x0, t, noise)
        loss = F.mse_loss(net(xt.to(device), t.to(device), lv.to(device)), noise.to(device))
        for g in opt.param_groups:
            g["lr"] = c["lr"] * min(1.0, (step + 1) / max(1, c["warmup"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - c["ema"])
        step += 1
        if log is not None:
            log.write(
                json.dumps({"step": step, "loss": round(float(loss.detach()), 5), "s": round(time.time() - t0, 1)})
                + "\n"
            )
            if progress and step % 50 == 0:
                print(f"step {step}/{c['steps']} loss {float(loss.detach()):.4f}", flush=True)
            if step % c["save_every"] == 0 or step == end:
                log.flush()
                _save(out / "last.pt", model, ema, opt, step, c, ucfg)
    if log is not None:
        log.close()
        if step >= c["steps"]:
            torch.save({"model": ema.state_dict(), "unet": ucfg.to_dict(), "config": c, "step": step}, out / "final.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out / ("final.pt" if step >= c["steps"] else "last.pt"), model


def _save(path: Path, model: CondUNet, ema: CondUNet, opt: Any, step: int, c: dict[str, Any], u: UNetConfig) -> None:
    tmp = path.with_suffix(".tmp")
    state = {"raw": model.state_dict(), "model": ema.state_dict(), "opt": opt.state_dict(), "step": step}
    torch.save({**state, "unet": u.to_dict(), "config": c}, tmp)
    tmp.replace(path)


def train(cfg: DiffusionConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) into ``cfg.out``; returns final.pt, or last.pt when paused at
    ``stop_after``."""
    return _train(cfg, progress, stop_after)[0]


def load_model(path: str | Path) -> tuple[CondUNet, Schedule, dict[str, Any]]:
    """A run's ``final.pt`` or ``last.pt`` (its EMA weights) -> (model in eval mode, schedule,
    checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no diffusion checkpoint {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "unet" not in ck:
        raise ValueError(f"{path} is not a diffusion checkpoint")
    model = CondUNet(UNetConfig.from_dict(ck["unet"]))
    model.load_state_dict(ck["model"])
    return model.eval(), Schedule(ck["config"]["timesteps"]), ck


def ddp_worker(rank: int, world: int, cfg: DiffusionConfig, port: int, dump: str) -> None:
    """One process of a CPU (gloo) DDP run, for ``torch.multiprocessing.spawn``: trains, then
    writes its raw weights to ``dump``/rank{rank}.pt (to check that the ranks agree)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    _, model = _train(cfg, progress=False)
    torch.save(model.state_dict(), Path(dump) / f"rank{rank}.pt")


def main(argv: list[str] | None = None) -> None:
    """``python -m server_train.diffusion.train`` (for torchrun): the options of ``scalpedge
    train diffusion``."""
    from server_train.diffusion.cli import train_options

    p = argparse.ArgumentParser(prog="server_train.diffusion.train")
    train_options(p)
    args = p.parse_args(argv)
    from server_train.diffusion.cli import config_of

    print(train(config_of(args), progress=not args.quiet, stop_after=args.stop_after))


if __name__ == "__main__":
    main()
