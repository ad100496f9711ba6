"""The one training loop of the torch models, and their resumable checkpoints.

A run lives in its folder ``cfg.out``: ``last.pt`` is written atomically every ``cfg.ckpt_every``
steps (with the optimizer and scheduler state), so a run restarted with the same ``out`` and
config resumes there; ``final.pt`` and ``train_config.json`` are written at the end; every
``log_every`` steps a line goes to ``log.jsonl`` and to the checkpoint's ``history``. Every
checkpoint holds the weights, the model config (enough to rebuild the network), the training
config and the step reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

__all__ = ["StepFn", "TrainRun", "load_checkpoint", "save_checkpoint", "warmup_cosine_lr"]

StepFn = Callable[[int], "tuple[torch.Tensor | None, dict[str, float]]"]
"""``step_fn(step)`` -> (loss to minimise, or None to skip the step; named loss parts to log)."""


def warmup_cosine_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """Learning rate at ``step``: linear warmup over ``warmup`` steps to ``lr``, then a cosine
    decay to 2 % of ``lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def save_checkpoint(
    path: Path, model: torch.nn.Module, model_config: dict[str, Any], cfg: Any, step: int, extra: dict[str, Any]
) -> None:
    """Atomic write of weights + model config + training config (a dataclass) + step (+ ``extra``)."""
    tmp = path.with_suffix(".tmp")
    payload = {
        "model": model.state_dict(),
        "model_config": model_config,
        "train_config": dataclasses.asdict(cfg),
        "step": step,
        **extra,
    }
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | Path, build: Callable[[dict[str, Any]], torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model rebuilt by ``build(model_config)`` with the saved weights, in eval mode; checkpoint dict)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model = build(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


@dataclass
class TrainRun:
    """One run's state: the model and its optimizer (and scheduler), the step reached, the log.

    ``cfg`` is the run's frozen config dataclass; it needs ``out``, ``steps`` and ``ckpt_every``
    and default values for every field (a checkpoint written before a field existed resumes with
    its default).
    """

    cfg: Any
    model: torch.nn.Module
    model_config: dict[str, Any]
    opt: torch.optim.Optimizer
    sched: Any = None  # a torch LR scheduler stepped after every optimizer step, or None
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def resume(self) -> bool:
        """Load ``out/last.pt`` if there (False if not); refuses one written with another config."""
        last = self.out / "last.pt"
        if not last.exists():
            return False
        ckpt = torch.load(str(last), map_location="cpu", weights_only=False)
        now = dataclasses.asdict(self.cfg)
        saved = {**dataclasses.asdict(type(self.cfg)()), **ckpt["train_config"]}
        if saved != now:
            changed = sorted(k for k, v in now.items() if saved.get(k) != v)
            raise ValueError(f"{last} was written with a different config ({', '.join(changed)}); use a new --out")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        self.step, self.history = ckpt["step"], ckpt.get("history", [])
        return True

    def save(self, name: str, resumable: bool = True) -> Path:
        """Write ``out/name`` (with the optimizer and scheduler state when ``resumable``)."""
        extra: dict[str, Any] = {"history": self.history}
        if resumable:
            extra["optimizer"] = self.opt.state_dict()
            if self.sched is not None:
                extra["scheduler"] = self.sched.state_dict()
        path = self.out / name
        save_checkpoint(path, self.model, self.model_config, self.cfg, self.step, extra)
        return path

    def fit(
        self,
        step_fn: StepFn,
        *,
        lr_at: Callable[[int], float] | None = None,
        log_every: int = 10,
        smoothing: float = 0.9,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> Path:
        """Run from ``self.step`` to ``cfg.steps``; returns ``final.pt`` (model in eval mode).

        Per step: the learning rate ``lr_at(step)`` (when given), ``step_fn``, a gradient step.
        The logged loss is an exponential average (weight ``smoothing`` on the past; 0: the
        step's own loss). ``stop_after``: pause at that step (``last.pt`` written, resumable)
        without changing the schedule; returns ``last.pt`` then. Call ``model.train()`` first.
        """
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc=f"train {cfg.model}")
        t0, running = time.time(), None
        while self.step < cfg.steps:
            if lr_at is not None:
                for group in self.opt.param_groups:
                    group["lr"] = lr_at(self.step)
            loss, parts = step_fn(self.step)
            if loss is not None:
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if self.sched is not None:
                    self.sched.step()
                value = float(loss.detach())
                running = value if running is None else smoothing * running + (1 - smoothing) * value
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running or 0.0:.3f}")
            if self.step % log_every == 0 or self.step == cfg.steps:
                self._log({"step": self.step, "loss": running, **parts, "seconds": round(time.time() - t0, 1)})
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or self.step == stop_after:
                self.save("last.pt")
            if stop_after is not None and self.step >= stop_after:
                bar.close()
                return self.out / "last.pt"
        bar.close()
        self.model.eval()
        final = self.save("final.pt", resumable=False)
        (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        return final

    def _log(self, entry: dict[str, Any]) -> None:
        if entry["loss"] is not None:
            entry["loss"] = round(entry["loss"], 4)
        self.history.append(entry)
        with open(self.out / "log.jsonl", "a") as log:
            log.write(json.dumps(entry) + "\n")
