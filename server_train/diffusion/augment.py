"""Balance a labelled condition set with DiffuseIT-M translations, recording provenance.

Input: a set in the ``scalpedge synth --conditions`` layout (``labels.jsonl`` + ``images/``).
``balance="inverse"``: generated frame i takes a source frame and, per condition, a target level
drawn with probability proportional to 1 / (count of that level in the set + 1), both from
``numpy.random.default_rng([seed, i, AUG_STREAM])``; its translation seed is
``frame_seed(seed, i)``. ``balance="severe"`` (one condition at a time, as the paper augments a
rare severe class): frame i draws a condition uniformly and a source frame below ``severe`` in
it, and is translated to ``severe`` in that condition with the other two conditioned on (and
labelled with) the source's own levels. Output (same layout, readable by ``scalpedge train classifier --synth``):

    images/{stem}.jpg     the source frames (unless copy=False) and aug_{i:06d}.jpg generated ones
    labels.jsonl          source rows as they were; generated rows: the target levels, the
                          source's hair truth (hair is kept), ``source`` stem and ``generated``
    provenance.jsonl      per generated frame: source file, target levels, seed, model checkpoint
                          and its sha256, features, masked, translation settings, command
    config.json           source set, n, seed, level counts before and after

Each row reproduces: ``scalpedge translate SOURCE --target ... --seed SEED --model MODEL``
gives the same pixels as the generated frame (before JPEG).

``accept`` (best of ``tries``, our addition to DiffuseIT-M): a translated frame is labelled with
its target, so a translation that misses it is a mislabelled frame of the rare class. With an
``Acceptance``, draw i is translated with up to ``tries`` seeds (``attempt_seed``; the first is
``frame_seed``) and the first output a condition grader grades at the target level in every
condition the draw changes is kept; when none is, the output with the highest mean probability
of those target levels is kept, marked ``accepted: false``, or with ``redraw`` the draw is
dropped and the next draw of the stream takes its place (at most ``max_draws`` x n draws; the
set is short when they run out: ``config.json`` says by how many). Provenance records the draw
and the seed kept.

Baselines of the same budget (``perturb``, the Table 3 comparison): ``n`` frames, each a source
drawn by rarity (``rarity_sources``: each level about as often as ``inverse_targets`` asks
for it) and perturbed without changing its labels:
``noise`` adds Gaussian noise (sigma ``NOISE_SIGMA`` of the 0..255 range), ``augmix`` applies
torchvision's AugMix (severity 3, width 3). Same layout and provenance.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.capture.imageio import read_frame
from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from server_train.diffusion.data import read_jsonl
from server_train.diffusion.translate import Translation, Translator

__all__ = [
    "augment",
    "Acceptance",
    "attempt_seed",
    "perturb",
    "inverse_targets",
    "severe_targets",
    "rarity_sources",
    "frame_seed",
    "sha256_of",
    "AUG_STREAM",
    "BALANCES",
]

AUG_STREAM = 7919  # third rng key of the augmentation draws
JPEG_QUALITY = 92
NOISE_SIGMA = 0.06  # Gaussian-noise baseline, share of the 0..255 range
PERTURBATIONS = ("noise", "augmix")
BALANCES = ("inverse", "severe")


def frame_seed(seed: int, index: int) -> int:
    """Translation seed of generated frame ``index``."""
    return seed * 1_000_003 + index


def attempt_seed(seed: int, index: int, attempt: int) -> int:
    """Translation seed of try ``attempt`` (0-based) of generated frame ``index``: try 0 is
    ``frame_seed``; later tries sit 2**40 apart, clear of every other frame's seeds."""
    return frame_seed(seed, index) + attempt * (1 << 40)


@dataclass(frozen=True)
class Acceptance:
    """Best-of-``tries`` selection of translations (module docstring). ``grader``: a condition
    grader (``device.models.classifiers.SeverityClassifier``: ``predict(frame_bgr)`` with
    ``levels`` by name and ``level_probs`` over LEVEL_NAMES); ``path``: its file, recorded."""

    grader: Any
    path: str
    tries: int = 4
    redraw: bool = False  # drop a draw no try hits and draw another, up to max_draws per frame
    max_draws: int = 20

    def __post_init__(self) -> None:
        if self.tries < 1 or self.max_draws < 1:
            raise ValueError(f"tries and max_draws must be at least 1, got {self.tries}, {self.max_draws}")

    def judge(self, image: np.ndarray, target: dict[str, int], changed: list[str]) -> tuple[bool, float]:
        """(every changed condition graded at its target level, mean probability of those levels)."""
        graded = self.grader.predict(image)
        hit = all(graded.levels[c] == LEVEL_NAMES[target[c]] for c in changed)
        return hit, float(np.mean([graded.level_probs[c][target[c]] for c in changed]))


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file ("" when it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return ""
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def level_counts(levels: np.ndarray) -> dict[str, list[int]]:
    """Nx3 levels -> per condition the count of each level."""
    return {c: np.bincount(levels[:, i], minlength=len(LEVEL_NAMES)).tolist() for i, c in enumerate(CONDITION_NAMES)}


def inverse_targets(levels: np.ndarray, n: int, seed: int) -> list[tuple[int, dict[str, int]]]:
    """``n`` (source index, {condition: target level}) draws, levels by inverse frequency."""
    if len(levels) == 0:
        raise ValueError("the labelled set is empty")
    probs = []
    for i in range(len(CONDITION_NAMES)):
        inv = 1.0 / (np.bincount(levels[:, i], minlength=len(LEVEL_NAMES)) + 1.0)
        probs.append(inv / inv.sum())
    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k, AUG_STREAM])
        src = int(rng.integers(len(levels)))
        out.append((src, {c: int(rng.choice(len(LEVEL_NAMES), p=probs[i])) for i, c in enumerate(CONDITION_NAMES)}))
    return out


def severe_targets(levels: np.ndarray, n: int, seed: int) -> list[tuple[int, dict[str, int]]]:
    """``n`` (source index, {condition: target level}) draws: a condition uniformly, a source frame
    below severe in it uniformly, the target severe there and the source's levels elsewhere."""
    if len(levels) == 0:
        raise ValueError("the labelled set is empty")
    severe = LEVEL_NAMES.index("severe")
    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k, AUG_STREAM])
        c = int(rng.integers(len(CONDITION_NAMES)))
        below = np.flatnonzero(levels[:, c] < severe)
        if len(below) == 0:
            raise ValueError(f"every frame is already severe in {CONDITION_NAMES[c]}")
        src = int(below[rng.integers(len(below))])
        target = {name: int(levels[src, i]) for i, name in enumerate(CONDITION_NAMES)}
        out.append((src, {**target, CONDITION_NAMES[c]: severe}))
    return out


def rarity_sources(levels: np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` source indices drawn with probability proportional to the sum over conditions of
    1 / (count of the frame's level + 1)^2, so each level is drawn about in proportion to
    1 / (its count + 1): the label-keeping analogue of ``inverse_targets``."""
    if len(levels) == 0:
        raise ValueError("the labelled set is empty")
    weight = np.zeros(len(levels))
    for i in range(len(CONDITION_NAMES)):
        counts = np.bincount(levels[:, i], minlength=len(LEVEL_NAMES))
        weight += 1.0 / (counts[levels[:, i]] + 1.0) ** 2  # a level's draws ~ 1 / (count + 1), as inverse_targets
    p = weight / weight.sum()
    return [int(np.random.default_rng([seed, k, AUG_STREAM]).choice(len(levels), p=p)) for k in range(n)]


def _perturbed(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """HxWx3 uint8 BGR -> the same frame with Gaussian noise or AugMix (seeded)."""
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return np.clip(image + rng.normal(0.0, NOISE_SIGMA * 255.0, image.shape), 0, 255).astype(np.uint8)
    import torch
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))
    out = v2.AugMix(severity=3, mixture_width=3)(rgb)
    return np.ascontiguousarray(out.numpy().transpose(1, 2, 0)[:, :, ::-1])


def perturb(
    data: str | Path,
    out: str | Path,
    kind: str,
    n: int | None = None,
    seed: int = 0,
    copy: bool = True,
    command: str | None = None,
) -> Path:
    """The ``noise`` / ``augmix`` baseline set of ``n`` frames (module docstring); returns ``out``."""
    from export.release import command_line

    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {PERTURBATIONS}")
    src_root, root = Path(data), Path(out)
    rows = read_jsonl(src_root / "labels.jsonl")
    if not rows:
        raise ValueError(f"{src_root / 'labels.jsonl'} is empty")
    levels = np.asarray([[int(r[c]) for c in CONDITION_NAMES] for r in rows], np.int64)  # type: ignore[call-overload]
    n = len(rows) if n is None else n
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels = list(rows) if copy else []
    if copy:
        for r in rows:
            shutil.copyfile(src_root / "images" / f"{r['stem']}.jpg", root / "images" / f"{r['stem']}.jpg")
    prov, drawn = [], []
    cmd = command or command_line()
    for k, si in enumerate(rarity_sources(levels, n, seed)):
        src_path = src_root / "images" / f"{rows[si]['stem']}.jpg"
        fseed = frame_seed(seed, k)
        stem = f"aug_{k:06d}"
        image = _perturbed(read_frame(src_path), kind, fseed)
        if not cv2.imwrite(str(root / "images" / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"cannot write {root / 'images' / stem}.jpg")
        labels.append({**rows[si], "stem": stem, "source": rows[si]["stem"], "generated": True})
        drawn.append(levels[si])
        prov.append({"stem": stem, "source": str(src_path), "perturbation": kind, "seed": fseed, "command": cmd})
    _write_jsonl(root / "labels.jsonl", labels)
    _write_jsonl(root / "provenance.jsonl", prov)
    after = np.concatenate([levels if copy else levels[:0], np.asarray(drawn, np.int64).reshape(-1, 3)])
    info = {"source": str(src_root), "n": n, "seed": seed, "balance": "rarity", "copy": copy, "perturbation": kind}
    info |= {"counts_before": level_counts(levels), "counts_after": level_counts(after)}
    (root / "config.json").write_text(json.dumps(info, indent=2))
    return root


def augment(
    translator: Translator,
    data: str | Path,
    out: str | Path,
    n: int | None = None,
    seed: int = 0,
    copy: bool = True,
    masked: bool = True,
    command: str | None = None,
    balance: str = "inverse",
    accept: Acceptance | None = None,
) -> Path:
    """Write the balanced set to ``out`` (layout in the module docstring); returns ``out``.
    accept: keep the best of several translations per draw (module docstring); None: one each."""
    from export.release import command_line

    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}; choose from {BALANCES}")

    src_root, root = Path(data), Path(out)
    rows = read_jsonl(src_root / "labels.jsonl")
    if not rows:
        raise ValueError(f"{src_root / 'labels.jsonl'} is empty")
    levels = np.asarray([[int(r[c]) for c in CONDITION_NAMES] for r in rows], np.int64)  # type: ignore[call-overload]
    n = len(rows) if n is None else n
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels, prov, new_levels = [], [], []
    if copy:
        for r in rows:
            shutil.copyfile(src_root / "images" / f"{r['stem']}.jpg", root / "images" / f"{r['stem']}.jpg")
            labels.append(r)
    ckpt_sha = sha256_of(translator.checkpoint)
    cmd = command or command_line()
    redraw = accept is not None and accept.redraw
    limit = n * accept.max_draws if accept is not None and redraw else n
    draws = (severe_targets if balance == "severe" else inverse_targets)(levels, limit, seed)
    misses = 0
    for k, (si, target) in enumerate(draws):
        if len(new_levels) == n:
            break
        src_row = rows[si]
        src_path = src_root / "images" / f"{src_row['stem']}.jpg"
        changed = [c for i, c in enumerate(CONDITION_NAMES) if target[c] != levels[si, i]]
        result, fseed, chosen = _translated(translator, read_frame(src_path), target, changed, seed, k, masked, accept)
        if redraw and not chosen["accepted"]:
            misses += 1  # dropped: the next draw takes its place
            continue
        stem = f"aug_{len(new_levels):06d}"
        chosen = chosen | {"draw": k} if accept is not None else chosen
        if not cv2.imwrite(
            str(root / "images" / f"{stem}.jpg"), result.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        ):
            raise OSError(f"cannot write {root / 'images' / stem}.jpg")
        labels.append({**src_row, **target, "stem": stem, "source": src_row["stem"], "generated": True})
        new_levels.append([target[c] for c in CONDITION_NAMES])
        prov.append(_provenance(stem, src_path, target, fseed, translator, ckpt_sha, masked, cmd) | chosen)
    _write_jsonl(root / "labels.jsonl", labels)
    _write_jsonl(root / "provenance.jsonl", prov)
    after = np.concatenate([levels if copy else levels[:0], np.asarray(new_levels, np.int64).reshape(-1, 3)])
    info = {"source": str(src_root), "n": n, "seed": seed, "balance": balance, "copy": copy, "masked": masked}
    if accept is not None:
        info["accept"] = {
            "grader": accept.path,
            "grader_sha256": sha256_of(accept.path),
            "tries": accept.tries,
            "accepted_share": round(float(np.mean([p["accepted"] for p in prov])), 4) if prov else 0.0,
            "mean_tries": round(float(np.mean([p["tries"] for p in prov])), 3) if prov else 0.0,
            "redraw": accept.redraw,
            "draws": len(new_levels) + misses,
            "dropped": misses,
            "short_by": n - len(new_levels),
        }
    info |= {"counts_before": level_counts(levels), "counts_after": level_counts(after)}
    (root / "config.json").write_text(json.dumps(info, indent=2))
    return root


def _translated(
    tr: Translator,
    source: np.ndarray,
    target: dict[str, int],
    changed: list[str],
    seed: int,
    index: int,
    masked: bool,
    accept: Acceptance | None,
) -> tuple[Translation, int, dict[str, Any]]:
    """The translation kept for draw ``index``, its seed and its provenance fields (``tries``,
    ``accepted``, ``accept_score`` with an acceptance; none without)."""
    if accept is None:
        fseed = frame_seed(seed, index)
        return tr.translate(source, target, seed=fseed, masked=masked), fseed, {}
    best: tuple[float, Translation, int] | None = None
    for attempt in range(accept.tries):
        aseed = attempt_seed(seed, index, attempt)
        result = tr.translate(source, target, seed=aseed, masked=masked)
        hit, score = accept.judge(result.image, target, changed or list(target))
        if best is None or hit or score > best[0]:
            best = (score, result, aseed)
        if hit:
            break
    assert best is not None  # tries >= 1
    return best[1], best[2], {"tries": attempt + 1, "accepted": hit, "accept_score": round(best[0], 4)}


def _provenance(
    stem: str, src: Path, target: dict[str, int], fseed: int, tr: Translator, sha: str, masked: bool, cmd: str
) -> dict[str, Any]:
    return {
        "stem": stem,
        "source": str(src),
        "target": {c: LEVEL_NAMES[v] for c, v in target.items()},
        "seed": fseed,
        "model": tr.checkpoint,
        "model_sha256": sha,
        "masked": masked,
        "settings": tr.info(),
        "command": cmd,
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
