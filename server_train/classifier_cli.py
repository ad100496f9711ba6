"""Server subcommands of the scalp classifiers, added to ``train``, ``eval``, ``export``, ``bench``.

    scalpedge train classifier --synth DIR [--real DIR] --out RUN [--no-inverse-freq] [--steps N] [--fold k/K]
        (real frames split by original: RUN/heldout.json holds the held-out presence thresholds)
    scalpedge train grader --real DIR [DIR ...] --synth DIR --out RUN [--size 512x384] [--folds K]
        (the frozen-trunk grader: presence heads per fold of the real originals, out-of-fold thresholds)
    scalpedge train alopecia --data DIR --out RUN [--segmenter X.onnx]
    scalpedge eval conditions --data DIR --out R.json [--model X.onnx] [--originals holdout]
    scalpedge eval synth-conditions --data DIR --out R.json [--model X.onnx] [--figures DIR]
    scalpedge eval diseases --data DIR --folds K --out R.json [--preprocess P] [--model M]
    scalpedge export classifier --checkpoint C.pt [C2.pt ...] --out X.onnx [--int8 Y.onnx --calib DIR...]
        [--thresholds H.json]   (several checkpoints: the --fold runs, one averaging graph)
    scalpedge export disease --data DIR --out X.onnx [--int8 Y.onnx] [--preprocess P] [--model M]
    scalpedge export classifier-card --kind severity --fp32 X.onnx [--int8 Y.onnx] --command CMD ...

INT8 goes through ``calibration`` (the model's recipe rules, then the accuracy gate against
FP32): ``--int8`` here, or ``scalpedge calibrate int8 --card`` on the card.
    scalpedge bench classifiers --out R.json --models A.onnx,B.onnx

``eval diseases`` and ``export disease`` default to the registry model and preprocessing the
shipped disease classifier was trained with (``shipped_disease_setup``), so their defaults
score and rebuild what ships. Heavy imports (torch, scikit-learn) happen only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

__all__ = ["add_train", "add_eval", "add_export", "add_bench", "shipped_disease_setup"]

_SHIPPED = "default: the shipped disease model's, from its model card"


def shipped_disease_setup(manifest: str | Path | None = None) -> dict[str, str]:
    """``{"model": registry name, "preprocess": "paper" | "resize"}`` the shipped disease
    classifier was trained with: its model card in the bundle manifest (default: the shipped
    bundle's ``manifest.json``), ``models.disease.provenance.training``. ValueError when the
    card does not record them."""
    from device.assets import default_manifest_path
    from device.models.classifiers import DISEASE_PREPROCESSING

    path = Path(manifest) if manifest is not None else default_manifest_path()
    card = json.loads(path.read_text()).get("models", {}).get("disease")
    training = ((card or {}).get("provenance") or {}).get("training") or {}
    model, preprocess = training.get("model"), training.get("preprocess")
    if not isinstance(model, str) or preprocess not in DISEASE_PREPROCESSING:
        raise ValueError(
            f"{path}: the disease model's card does not record its training model and preprocessing "
            f"(models.disease.provenance.training: {training}); pass --model and --preprocess"
        )
    return {"model": model, "preprocess": preprocess}


def _disease_setup(args: argparse.Namespace) -> tuple[str, str]:
    """``--model`` and ``--preprocess``, each defaulting to the shipped disease model's (said on stdout)."""
    if args.model is not None and args.preprocess is not None:
        return args.model, args.preprocess
    shipped = shipped_disease_setup()
    model, preprocess = args.model or shipped["model"], args.preprocess or shipped["preprocess"]
    print(f"disease classifier: model {model}, preprocess {preprocess} (unset options as the shipped model's card)")
    return model, preprocess


def _write_json(path: str | Path, report: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


def _summary(report: dict[str, Any], out: str | Path | None = None) -> int:
    """Write ``report`` to ``out`` (when given), print its scalar part; the command's exit code."""
    if out:
        _write_json(out, report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}, indent=1)[:3000])
    return 0


def add_train(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("classifier", help="train the condition severity classifier (synthetic levels + real presence)")
    p.add_argument("--synth", required=True, help="folder from `scalpedge synth --conditions`")
    p.add_argument("--real", help="real frames like scalp-microscope/train (images/, YOLO-seg labels/)")
    p.add_argument("--out", required=True, help="run folder (resumes from last.pt)")
    p.add_argument("--model", help="severity_dense_lite0 (default: with polygon map head), severity_lite0, *_tiny")
    p.add_argument("--cache", help="feature cache folder (default RUN/cache; runs with the same data may share it)")
    p.add_argument("--no-inverse-freq", dest="inverse_freq", action="store_const", const=False)
    p.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False)
    for name, typ in (("steps", int), ("batch", int), ("lr", float), ("split", int), ("real-share", float)):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--map-weight", type=float, help="weight of the polygon map loss (BCE + Dice)")
    p.add_argument("--holdout-share", type=float, help="share of real originals held out for thresholds (0.2)")
    p.add_argument("--fold", help="k/K: hold out fold k of K real originals instead (cross-fitted ensembles)")
    p.add_argument("--eval-every", type=int, help="steps between held-out presence F1 log entries")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    p.set_defaults(func=_run_train_classifier)
    g = tsub.add_parser(
        "grader", help="condition grader on frozen ImageNet features at 2x resolution (real polygons, synthetic levels)"
    )
    g.add_argument("--real", required=True, nargs="+", help="real frame folders (images/, YOLO-seg labels/)")
    g.add_argument("--synth", required=True, help="folder from `scalpedge synth --conditions` (levels)")
    g.add_argument("--out", required=True, help="run folder: feature cache, final.pt, report.json")
    g.add_argument("--size", default="512x384", help="W x H of the grader's input (4:3, multiples of 32)")
    for name, typ in (("folds", int), ("steps", int), ("level-steps", int), ("seed", int), ("hidden", int)):
        g.add_argument(f"--{name}", type=typ)
    g.add_argument("--threshold-rule", choices=("prevalence", "f1"), help="out-of-fold threshold rule (prevalence)")
    g.add_argument("--no-mirror", dest="mirror", action="store_const", const=False, help="score the frame only")
    g.add_argument("--tiny", action="store_true", help="random narrow backbone (tests)")
    g.add_argument("--threads", type=int, default=2)
    g.set_defaults(func=_run_train_grader)
    a = tsub.add_parser("alopecia", help="alopecia grader (gradient boosting on hair features) -> ONNX")
    a.add_argument("--data", required=True, help="folder from `scalpedge synth --conditions` (hair-loss levels)")
    a.add_argument("--out", required=True, help="run folder: features cache, alopecia.onnx, report.json")
    a.add_argument("--heldout", help="second condition set to report held-out scores on")
    a.add_argument("--segmenter", help="segmenter ONNX measuring the hairs (default: the shipped student)")
    a.add_argument("--limit", type=int)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_run_train_alopecia)


def _run_train_classifier(args: argparse.Namespace) -> int:
    from server_train.training.classifier_train import ClsTrainConfig, train_classifier

    fields = {f.name for f in dataclasses.fields(ClsTrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    print(f"wrote {train_classifier(ClsTrainConfig(**given))}")
    return 0


def _run_train_grader(args: argparse.Namespace) -> int:
    import torch

    from server_train.training.condition_grader_train import GraderConfig, train_grader

    torch.set_num_threads(args.threads)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must read WxH, e.g. 512x384, got {args.size!r}") from None
    given = {k.replace("-", "_"): v for k, v in vars(args).items() if v is not None}
    fields = {f.name for f in dataclasses.fields(GraderConfig)}
    cfg = GraderConfig(width=width, height=height, **{k: v for k, v in given.items() if k in fields and k != "tiny"})
    cfg.tiny = bool(args.tiny)
    return _summary(train_grader(args.real, args.synth, args.out, cfg))


def _run_train_alopecia(args: argparse.Namespace) -> int:
    from server_train.training.alopecia_train import train_alopecia

    report = train_alopecia(
        args.data, args.out, segmenter=args.segmenter, heldout=args.heldout, limit=args.limit, seed=args.seed
    )
    return _summary(report)


def add_eval(esub: argparse._SubParsersAction) -> None:
    c = esub.add_parser("conditions", help="presence F1 on real frames (images/, YOLO-seg labels/, ids d/ds/o/s)")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--model", help="severity classifier ONNX (default: the shipped one, with its card's thresholds)")
    c.add_argument("--threshold", type=float, help="one P(present) threshold for all (default: the model's own)")
    c.add_argument("--originals", choices=("all", "holdout", "train"), default="all", help="side of the split")
    c.add_argument("--holdout-share", type=float, default=0.2, help="held-out share of originals (with --originals)")
    c.add_argument("--threads", type=int, default=1)
    c.set_defaults(func=_run_eval_conditions)
    s = esub.add_parser("synth-conditions", help="per-level F1 and confusion matrices on a synthetic condition set")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--model", help="severity classifier ONNX (default: the shipped one)")
    s.add_argument("--figures", help="folder for confusion-matrix PNGs")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=_run_eval_synth_conditions)
    d = esub.add_parser("diseases", help="stratified K-fold accuracy of the disease-type classifier")
    d.add_argument("--data", required=True, help="a folder per class (alopecia, psoriasis, folliculitis)")
    d.add_argument("--folds", type=int, default=5)
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--figures", help="folder for the confusion-matrix PNG")
    d.add_argument("--preprocess", choices=("paper", "resize"), help=f"paper's preprocessing or resize ({_SHIPPED})")
    d.add_argument("--model", help=f"registry name, e.g. disease_lite0_tiles (3x3 tiles) ({_SHIPPED})")
    d.add_argument("--repeats", type=int, default=3, help="CV shuffles (seeds seed, seed+1, ...)")
    d.set_defaults(func=_run_eval_diseases)


def _run_eval_conditions(args: argparse.Namespace) -> int:
    from server_train.evaluation.classifier_eval import evaluate_real_conditions

    report = evaluate_real_conditions(
        args.data,
        args.model,
        threshold=args.threshold,
        threads=args.threads,
        originals=args.originals,
        holdout_share=args.holdout_share,
    )
    return _summary(report, args.out)


def _run_eval_synth_conditions(args: argparse.Namespace) -> int:
    from server_train.evaluation.classifier_eval import evaluate_synthetic_conditions

    report = evaluate_synthetic_conditions(args.data, args.model, figures=args.figures, threads=args.threads)
    return _summary(report, args.out)


def _run_eval_diseases(args: argparse.Namespace) -> int:
    from server_train.training.disease_train import cross_validate

    model, preprocess = _disease_setup(args)
    report = cross_validate(
        args.data,
        folds=args.folds,
        seed=args.seed,
        figures=args.figures,
        model=model,
        preprocess=preprocess,
        repeats=args.repeats,
    )
    return _summary(report, args.out)


def add_export(esub: argparse._SubParsersAction) -> None:
    c = esub.add_parser("classifier", help="condition classifier checkpoint -> ONNX (+ INT8 Q/DQ)")
    c.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="one checkpoint, or the final.pt of each cross-fitted fold run (--fold k/K): one graph averaging them",
    )
    c.add_argument("--out", required=True, help="FP32 .onnx")
    c.add_argument("--int8", help="also write the gated INT8 model here (calibration's CPU recipe)")
    c.add_argument("--calib", nargs="*", default=[], help="folders of representative frames for calibration")
    c.add_argument("--calib-n", type=int, default=64)
    c.add_argument(
        "--thresholds",
        help="heldout.json of the run (default: the one beside --checkpoint, if any; for folds, their pooled ones)",
    )
    c.set_defaults(func=_run_export_classifier)
    d = esub.add_parser("disease", help="train the disease classifier on all photos and export it")
    d.add_argument("--data", required=True)
    d.add_argument("--out", required=True, help="FP32 .onnx")
    d.add_argument("--int8", help="also write the gated INT8 model here (calibrated on the photos)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--preprocess", choices=("paper", "resize"), help=f"paper's preprocessing or resize ({_SHIPPED})")
    d.add_argument("--model", help=f"registry name, e.g. disease_lite0_tiles (3x3 tiles) ({_SHIPPED})")
    d.set_defaults(func=_run_export_disease)
    m = esub.add_parser("classifier-card", help="write a classifier's model card DIR/<name>.card.json (provenance)")
    m.add_argument("--dir", default="device/assets/default")
    m.add_argument("--kind", required=True, choices=("severity", "alopecia", "disease"))
    m.add_argument("--fp32", required=True, help="FP32 ONNX (copied into --dir)")
    m.add_argument("--int8", help="INT8 ONNX from `export classifier/disease --int8` (copied into --dir)")
    m.add_argument("--default-precision", choices=("fp32", "int8"), default="fp32")
    m.add_argument("--command", action="append", default=[], help="a command that produced it (repeatable)")
    m.add_argument("--metrics", nargs="*", default=[], help="JSON reports to record (lists dropped)")
    m.add_argument("--thresholds", help="heldout.json with presence thresholds (default: the FP32 graph's)")
    m.set_defaults(func=_run_export_card)


def _run_export_classifier(args: argparse.Namespace) -> int:
    from device.contracts.constants import CONDITION_NAMES
    from export.classifier_export import export_condition_classifier, quantize_int8
    from server_train.evaluation.presence_thresholds import pool_heldout
    from server_train.models.classifier import ConditionEnsemble
    from server_train.training.classifier_train import load_classifier

    if len(args.checkpoint) == 1:
        import torch

        ck = torch.load(args.checkpoint[0], map_location="cpu", weights_only=False)
        if ck.get("model_config", {}).get("kind") == "condition_grader":
            return _export_grader(args, ck)
    loaded = [load_classifier(c) for c in args.checkpoint]
    runs = [Path(c).parent for c in args.checkpoint]
    if len(loaded) == 1:
        model, ck = loaded[0]
        meta = {"model_config": ck["model_config"], "train_config": ck["train_config"], "step": ck["step"]}
        held: Path | None = Path(args.thresholds) if args.thresholds else runs[0] / "heldout.json"
    else:
        splits = {int(ck["train_config"]["split"]) for _, ck in loaded}
        if len(splits) != 1:
            raise SystemExit(f"the members were trained from different splits {sorted(splits)}")
        model = ConditionEnsemble([m for m, _ in loaded], splits.pop())
        meta = {
            "model_config": {"kind": "severity_ensemble", "members": [ck["model_config"] for _, ck in loaded]},
            "train_config": [ck["train_config"] for _, ck in loaded],
            "step": [ck["step"] for _, ck in loaded],
        }
        held = Path(args.thresholds) if args.thresholds else None
        if held is None:
            missing = [str(r) for r in runs if not (r / "heldout.json").is_file()]
            if missing:
                raise SystemExit(f"no heldout.json in {', '.join(missing)} (train each member with --fold k/K)")
            pooled = pool_heldout([json.loads((r / "heldout.json").read_text()) for r in runs], CONDITION_NAMES)
            held = Path(args.out).with_suffix(".heldout.json")
            held.parent.mkdir(parents=True, exist_ok=True)
            held.write_text(json.dumps(pooled, indent=1))
            print(f"pooled held-out of {pooled['frames']} frames: {pooled['at_thresholds']['f1']} -> {held}")
    if held is not None and held.is_file():
        meta["presence_thresholds"] = json.loads(held.read_text())["thresholds"]
        print(f"presence thresholds {meta['presence_thresholds']} from {held}")
    path = export_condition_classifier(model, args.out, metadata=meta)
    print(f"wrote {path}")
    if args.int8:
        print(f"wrote {quantize_int8(path, args.int8, args.calib, n=args.calib_n)}")
    return 0


def _export_grader(args: argparse.Namespace, ck: dict[str, Any]) -> int:
    """``train grader``'s final.pt (loaded: ``ck``) -> ONNX at the grader's own input size, its
    out-of-fold thresholds in the graph's metadata (the card copies them)."""
    from export.classifier_export import export_condition_classifier, quantize_int8
    from server_train.training.condition_grader_train import grader_from_checkpoint

    model = grader_from_checkpoint(ck)
    cfg = ck["train_config"]
    meta = {
        "model_config": ck["model_config"],
        "train_config": cfg,
        "presence_thresholds": ck["presence_thresholds"],
        "report": ck["report"],
    }
    if args.thresholds:
        meta["presence_thresholds"] = json.loads(Path(args.thresholds).read_text())["thresholds"]
    print(f"presence thresholds {meta['presence_thresholds']} ({cfg['threshold_rule']} rule, out of fold)")
    path = export_condition_classifier(model, args.out, metadata=meta, size=(cfg["width"], cfg["height"]))
    print(f"wrote {path}")
    if args.int8:
        print(f"wrote {quantize_int8(path, args.int8, args.calib, n=args.calib_n)}")
    return 0


def _run_export_disease(args: argparse.Namespace) -> int:
    from server_train.training.disease_train import train_and_export

    model, preprocess = _disease_setup(args)
    written = train_and_export(args.data, args.out, int8=args.int8, seed=args.seed, model=model, preprocess=preprocess)
    for p in written:
        print(f"wrote {p}")
    return 0


def _run_export_card(args: argparse.Namespace) -> int:
    from export.classifier_cards import write_card

    metrics = {}
    for path in args.metrics:
        report = json.loads(Path(path).read_text())
        metrics[Path(path).stem] = {k: v for k, v in report.items() if not isinstance(v, list)}
    files = {"fp32": args.fp32, **({"int8": args.int8} if args.int8 else {})}
    card_path = write_card(args.dir, args.kind, files, args.command, metrics, args.default_precision)
    card = json.loads(card_path.read_text())
    if args.thresholds:
        found = json.loads(Path(args.thresholds).read_text())["thresholds"]
    else:
        found = card["provenance"]["training"].get("presence_thresholds")
    if args.kind == "severity" and found:
        card["thresholds"] = {f"presence_{c}": float(t) for c, t in found.items()}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"card thresholds: {card['thresholds']}")
    print(f"wrote {card_path}")
    return 0


def add_bench(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser("classifiers", help="ONNX Runtime CPU latency of classifier graphs (FP32 vs INT8)")
    b.add_argument("--out", required=True)
    b.add_argument("--models", required=True, help="comma-separated ONNX files")
    b.add_argument("--threads", default="1,2")
    b.add_argument("--runs", type=int, default=50)
    b.set_defaults(func=_run_bench_classifiers)


def _run_bench_classifiers(args: argparse.Namespace) -> int:
    from server_train.evaluation.classifier_eval import bench_latency

    threads = tuple(int(t) for t in args.threads.split(","))
    report = bench_latency(args.models.split(","), threads, args.runs)
    _write_json(args.out, report)
    for row in report["results"]:
        print(json.dumps(row))
    return 0
