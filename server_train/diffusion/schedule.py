"""DDPM noise schedule (cosine, Nichol & Dhariwal 2021), the forward process q(x_t | x_0), and
DDIM sampling (Song et al. 2021) with classifier-free guidance.

Images are Nx3xHxW float32 in [-1, 1]; timesteps are int64 in [0, T). The model predicts the
noise epsilon: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["Schedule", "guided_eps", "ddim_sample"]

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Schedule:
    """``T`` diffusion steps with the cosine schedule; ``abar`` (T,) float64 cumulative alphas."""

    def __init__(self, steps: int = 1000) -> None:
        self.T = steps
        s = 0.008
        x = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
        abar = f[1:] / f[0]
        betas = (1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])).clamp(max=0.999)
        self.abar = torch.cumprod(1 - betas, 0)

    def _a(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.abar.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t from x_0 (N...), timesteps (N,) and standard normal ``noise`` (like x0)."""
        a = self._a(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def x0_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The x_0 estimate of x_t given predicted noise."""
        a = self._a(t, xt)
        return (xt - (1 - a).sqrt() * eps) / a.sqrt()

    def ddim_step(
        self,
        xt: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDIM update x_t -> x_{t_prev} (t_prev < 0 means the final x_0); ``eta`` 0 is
        deterministic, 1 is DDPM-like (needs ``noise``). x_0 is clipped to [-1, 1]."""
        n = xt.shape[0]
        tt = torch.full((n,), t, dtype=torch.long, device=xt.device)
        x0 = self.x0_from_eps(xt, tt, eps).clamp(-1, 1)
        if t_prev < 0:
            return x0
        a_t, a_p = float(self.abar[t]), float(self.abar[t_prev])
        eps = (xt - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
        x = math.sqrt(a_p) * x0 + math.sqrt(max(1 - a_p - sigma**2, 0.0)) * eps
        if sigma > 0 and noise is not None:
            x = x + sigma * noise
        return x

    def timesteps(self, n: int, start: int | None = None) -> list[int]:
        """``n`` descending timesteps from ``start`` (default T-1) to 0."""
        start = self.T - 1 if start is None else start
        n = max(1, min(n, start + 1))
        return sorted({round(start * (1 - i / n)) for i in range(n)}, reverse=True)


def guided_eps(model: EpsModel, x: torch.Tensor, t: torch.Tensor, levels: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + scale * (eps_c - eps_u); scale 1 is the conditional
    model alone, 0 the unconditional one. One batched forward of 2N when both are needed."""
    if scale == 1.0:
        return model(x, t, levels)
    null = torch.full_like(levels, -1)
    if scale == 0.0:
        return model(x, t, null)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([levels, null]))
    e_c, e_u = eps.chunk(2)
    return e_u + scale * (e_c - e_u)


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    schedule: Schedule,
    levels: torch.Tensor,
    size: int,
    steps: int = 50,
    guidance: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample N frames (Nx3xsizexsize in [-1, 1]) for Nx3 ``levels`` (-1 = unconditional)."""
    x = torch.randn(levels.shape[0], 3, size, size, generator=generator)
    ts = schedule.timesteps(steps)
    for i, t in enumerate(ts):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        eps = guided_eps(model, x, tt, levels, guidance)
        x = schedule.ddim_step(x, eps, t, ts[i + 1] if i + 1 < len(ts) else -1)
    return x
