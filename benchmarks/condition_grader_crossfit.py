"""Score real frames with graders that never saw them, though trained like the shipped one.

The shipped condition grader trains its presence heads on every labelled real frame
(``scalp-microscope`` train and valid). To score ``valid`` without it grading frames it learnt,
``valid``'s originals are cut into ``--parts`` parts (sha256 of the original's name); for each
part the heads are trained, per fold, on all the other frames exactly as ``scalpedge train
grader`` does (same features, folds, steps, threshold rule), and the mean of their
probabilities scores the held part at their out-of-fold thresholds. Both threshold rules are
reported, and the same heads scored with the other view setting (``other_view``: the frame
alone when the run mirrors, else with its mirror). Uses the run's feature cache (``train
grader`` first, with the same ``--real`` folders).

    python benchmarks/condition_grader_crossfit.py --run runs/grader \\
        --real ../shared/data/scalp-microscope/train ../shared/data/scalp-microscope/valid \\
        --score ../shared/data/scalp-microscope/valid --synth data/cls/train --out R.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from server_train.evaluation.presence_thresholds import presence_auc, presence_scores
from server_train.training.condition_grader_train import (
    THRESHOLD_RULES,
    GraderConfig,
    choose_presence_thresholds,
    fit_folds,
    fold_index,
    grader_data,
    presence_probs,
)
from server_train.training.condition_maps import fold_range, holdout_mask

NAMES = ("dandruff", "oiliness", "erythema")  # the report names of the real set's conditions


def colour_cells(x: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """Nx3xHxW normalised RGB -> Nx6x(H/cell)x(W/cell): each cell's mean and standard deviation
    per channel (absolute colour, which the frozen ImageNet features carry only indirectly).
    Tried as extra presence-head input on 2026-12-07 and not adopted (docs/results/classifiers.md)."""
    mean = F.avg_pool2d(x, cell)
    sq = F.avg_pool2d(x * x, cell)
    return torch.cat([mean, (sq - mean * mean).clamp_min(1e-6).sqrt()], 1)


def with_colour(feats: dict[str, np.ndarray], paths: list[Path], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """``feats`` with each frame's ``colour_cells`` (6 channels; the same for both views, the
    cells dividing the width exactly) appended to its f16 maps."""
    from device.capture.imageio import read_frame
    from device.models.classifiers import prepare_condition_input

    cells = []
    with torch.no_grad():
        for p in paths:
            c = colour_cells(torch.from_numpy(prepare_condition_input(read_frame(p), size))).numpy()
            cells.append(np.concatenate([c, c]))
    return {**feats, "f16": np.concatenate([feats["f16"], np.stack(cells).astype(np.float16)], 2)}


def frames_under(paths: list[Path], folder: str) -> np.ndarray:
    """N bool: which of the run's real frames lie under ``folder``."""
    root = Path(folder).absolute()
    return np.array([Path(p).absolute().is_relative_to(root) for p in paths])


def crossfit(
    run: Path,
    real: list[str],
    score: str,
    synth: str,
    parts: int,
    single_view: bool = False,
    colour: bool = False,
) -> dict[str, object]:
    # the run's settings; while it is still training (no final.pt yet), the defaults it runs with
    final = run / "final.pt"
    config = torch.load(final, map_location="cpu", weights_only=False)["train_config"] if final.is_file() else {}
    cfg = GraderConfig(**config)
    _, labels, feats, _, _ = grader_data(list(real), synth, run, cfg)
    if colour:
        feats = with_colour(feats, labels.paths, (cfg.width, cfg.height))
    if single_view:  # the same heads (trained on random views), scored on the frame alone
        cfg = dataclasses.replace(cfg, mirror=False)
    scored = frames_under(labels.paths, score)
    if not scored.any():
        raise SystemExit(f"no frame of {score} among the run's real frames")
    part = np.full(len(labels.paths), -1)
    for k in range(parts):
        start, share = fold_range(f"{k}/{parts}")
        part[scored & holdout_mask(labels.paths, share, salt="crossfit:", start=start)] = k
    truth = labels.presence
    fold = fold_index(labels, cfg.folds)
    modes = {"main": cfg.mirror, "other_view": not cfg.mirror}
    prob = {m: np.zeros(truth.shape) for m in modes}
    pred = {(m, rule): np.zeros(truth.shape, bool) for m in modes for rule in THRESHOLD_RULES}
    for k in range(parts):
        held, pool = np.flatnonzero(part == k), np.flatnonzero(part != k)
        heads = fit_folds(feats, labels, pool, cfg)[0]
        for m, mirror in modes.items():
            oof = np.zeros((len(pool), truth.shape[1]))
            for j, head in enumerate(heads):
                oof[fold[pool] == j] = presence_probs(head, feats, pool[fold[pool] == j], mirror)
            prob[m][held] = np.mean([presence_probs(h, feats, held, mirror) for h in heads], 0)
            for rule in THRESHOLD_RULES:
                t = np.asarray(choose_presence_thresholds(oof, truth[pool], rule))
                pred[m, rule][held] = prob[m][held] >= t[None, :]
        print(f"part {k}: {len(held)} frames scored, {len(pool)} trained on", flush=True)
    idx = np.flatnonzero(scored)
    out: dict[str, object] = {"run": str(run), "scored": score, "frames": int(len(idx)), "parts": parts}
    out["config"] = {**dataclasses.asdict(cfg), "colour": colour}
    for m in modes:
        res: dict[str, object] = {"mirror": modes[m]}
        for rule in THRESHOLD_RULES:
            s = presence_scores(pred[m, rule][idx].astype(float), truth[idx], [0.5] * 3, NAMES)
            res[rule] = {k: s[k] for k in ("macro_f1", "f1", "precision", "recall", "support")}
        res["auc"] = presence_auc(prob[m][idx], truth[idx], NAMES)
        if m == "main":
            out.update(res)
        else:
            out[m] = res
    return out


def oof_views(
    run: Path, real: list[str], synth: str, score: str | None = None, colour: bool = False
) -> dict[str, object]:
    """The run's own out-of-fold scores (its saved fold heads on the frames each did not see)
    with the mirror and without it: whether the device may skip the mirrored pass. With
    ``colour`` the fold heads are refit (same folds, steps, seed) on features with the colour
    cells. Thresholds by the run's rule on the out-of-fold probabilities of every frame; scored
    on the frames under ``score`` (default: all)."""
    from server_train.training.condition_grader_train import load_grader

    model, ck = load_grader(run / "final.pt")
    cfg = GraderConfig(**ck["train_config"])
    _, labels, feats, _, _ = grader_data(list(real), synth, run, cfg)
    heads = list(model.heads)
    if colour:
        feats = with_colour(feats, labels.paths, (cfg.width, cfg.height))
        heads = fit_folds(feats, labels, np.arange(len(labels.paths)), cfg)[0]  # type: ignore[arg-type]
    fold, truth = fold_index(labels, cfg.folds), labels.presence
    scored = frames_under(labels.paths, score) if score else np.ones(len(fold), bool)
    out: dict[str, object] = {"frames": len(fold), "scored": score or "all", "scored_frames": int(scored.sum())}
    out["config"] = {**dataclasses.asdict(cfg), "colour": colour}
    for mirror in (True, False):
        oof = np.zeros(truth.shape)
        for k, head in enumerate(heads):
            idx = np.flatnonzero(fold == k)
            oof[idx] = presence_probs(head, feats, idx, mirror)  # type: ignore[arg-type]
        t = choose_presence_thresholds(oof, truth, cfg.threshold_rule)
        s = presence_scores(oof[scored], truth[scored], t, NAMES)
        out["mirror" if mirror else "single_view"] = {
            "macro_f1": s["macro_f1"],
            "f1": s["f1"],
            "auc": presence_auc(oof[scored], truth[scored], NAMES),
            "thresholds": [round(float(x), 4) for x in t],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a `scalpedge train grader` run folder")
    ap.add_argument("--real", required=True, nargs="+", help="the run's --real folders, in its order")
    ap.add_argument("--score", help="the real folder (one of --real) to score held out (with --views: to score)")
    ap.add_argument(
        "--views", action="store_true", help="instead: the run's out-of-fold scores with and without the mirror"
    )
    ap.add_argument("--synth", required=True, help="the run's --synth folder")
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--single-view", action="store_true", help="score the frame alone (no mirror), thresholds likewise")
    ap.add_argument("--colour", action="store_true", help="heads also read each 16 px cell's colour statistics")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.views:
        report = oof_views(a.run, a.real, a.synth, a.score, a.colour)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        return
    if a.score is None:
        raise SystemExit("--score DIR (or --views)")
    report = crossfit(a.run, a.real, a.score, a.synth, a.parts, a.single_view, a.colour)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in (*THRESHOLD_RULES, "auc")}))


if __name__ == "__main__":
    main()
