"""Per-model INT8 rules: which recipes a model gets, which of its nodes stay FP32, and the
accuracy its INT8 variants must keep.

The defaults below are keyed by what the FP32 graph is, told by its input name (the contract
in ``device.contracts.constants``); a model card may override any field in an ``"int8"``
section, e.g. ``{"int8": {"keep_thin_fp32": 0, "max_drop": 0.01}}``. The CLI only passes
one-off overrides; the rules that made a shipped variant are recorded in its card
(``quantization.recipe``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from calibration.gate import AgreementGate, DiceGate, Judge, MiouGate, mask_pairs
from calibration.quantize import RECIPES, QuantRecipe, producing_convs
from device.contracts.constants import (
    CLS_INPUT,
    DISEASE_INPUT,
    HAIR_PHOTO_INPUT,
    PIX_IN_IMAGE,
    SEG_INPUT,
    SEG_OUT_DENSITY,
    SEG_OUT_ENDS,
    SEG_OUT_THIN,
)

__all__ = ["Int8Rules", "RULES", "model_kind", "rules_for", "recipes_for", "judge_for"]


@dataclass(frozen=True)
class Int8Rules:
    """recipes: names in ``calibration.quantize.RECIPES``; keep_thin_fp32: Convs with at most
    this many output channels stay FP32; keep_outputs_fp32: graph outputs whose producing
    Convs stay FP32 (outputs a frame is summed over); exclude: node names that stay FP32;
    max_drop: largest allowed loss of the gate's score (Dice for segmenters, decision
    agreement for classifiers); max_logit_error: classifiers only, largest logit difference
    to FP32 as a share of FP32's largest absolute logit."""

    recipes: tuple[str, ...]
    keep_thin_fp32: int = 0
    keep_outputs_fp32: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_drop: float = 0.005
    max_logit_error: float = 0.25


RULES = {
    # The strand-end and hair densities are summed over a frame to count hairs: their conv stays
    # FP32 (rounding errors add up); the 8-channel full-resolution convs too (counts within 0.5
    # hair of FP32 instead of +1.4 on the label-free student).
    "segmenter": Int8Rules(
        ("tensorrt", "ort-cpu"), keep_thin_fp32=8, keep_outputs_fp32=(SEG_OUT_ENDS, SEG_OUT_DENSITY, SEG_OUT_THIN)
    ),
    # Classifiers: the device runs them on the CPU; at most 5% of decisions may change.
    "conditions": Int8Rules(("ort-cpu",), max_drop=0.05),
    "disease": Int8Rules(("ort-cpu",), max_drop=0.05),
    # The hair-photo segmenter: at most 0.5 pt of held-out mIoU.
    "hair_photo": Int8Rules(("ort-cpu",), max_drop=0.005),
    # The pixel refiner (the fused mask a diagnosis measures): at most 0.5 pt of held-out fused
    # Dice (calibration.pixel_refiner.FusedDiceGate). CPU only: on a Jetson it runs as FP16.
    "pixel_refiner": Int8Rules(("ort-cpu",), max_drop=0.005),
}
_KINDS = {
    SEG_INPUT: "segmenter",
    CLS_INPUT: "conditions",
    DISEASE_INPUT: "disease",
    HAIR_PHOTO_INPUT: "hair_photo",
    PIX_IN_IMAGE: "pixel_refiner",
}


def model_kind(fp32: str | Path) -> str:
    """ "segmenter", "conditions", "disease", "hair_photo" or "pixel_refiner", from the graph's input
    name; ValueError otherwise."""
    import onnx

    names = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
    kind = next((_KINDS[n] for n in names if n in _KINDS), None)
    if kind is None:
        raise ValueError(f"{fp32}: inputs {names} are none of {sorted(_KINDS)}; no INT8 rules for this model")
    return kind


def rules_for(card: dict[str, Any], fp32: str | Path) -> Int8Rules:
    """The model's default rules with the card's ``"int8"`` section applied over them."""
    rules = RULES[model_kind(fp32)]
    section = card.get("int8") or {}
    known = {f.name for f in fields(Int8Rules)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"model card {card.get('name')!r}: unknown int8 rule(s) {unknown}; known: {sorted(known)}")
    changes: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    return replace(rules, **changes)


def recipes_for(rules: Int8Rules, fp32: str | Path, **options: Any) -> list[QuantRecipe]:
    """The rules' recipes with their FP32 nodes filled in; ``options`` (method, per_channel,
    ...) are passed to ``QuantRecipe.with_options`` (None values ignored)."""
    unknown = [n for n in rules.recipes if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipes {unknown}; choose from {sorted(RECIPES)}")
    exclude = list(rules.exclude)
    for output in rules.keep_outputs_fp32:
        exclude += [n for n in producing_convs(fp32, output) if n not in exclude]
    keep = {"exclude": tuple(exclude), "keep_thin_fp32": rules.keep_thin_fp32}
    return [RECIPES[n].with_options(**keep).with_options(**options) for n in rules.recipes]


def judge_for(
    kind: str,
    rules: Int8Rules,
    reader: Any,
    gate_data: str | Path | None = None,
    gate_limit: int | None = None,
    threads: int = 2,
) -> Judge:
    """The accuracy gate of a model ``kind``: a segmenter's held-out Dice (the hair-photo
    segmenter's mIoU) on ``gate_data`` (a folder with images/ and masks/, required); a
    classifier's agreement with FP32 on the frames of ``reader`` (its calibration frames
    unless another reader is given)."""
    if kind == "segmenter":
        if gate_data is None:
            raise ValueError("a segmenter's INT8 gate needs held-out data with masks (--gate-data)")
        return DiceGate(gate_data, rules.max_drop, gate_limit, threads)
    if kind == "hair_photo":
        if gate_data is None:
            raise ValueError("the hair-photo INT8 gate needs held-out photos with masks (--gate-data)")
        return MiouGate(mask_pairs(gate_data)[:gate_limit], rules.max_drop, threads)
    reader.rewind()
    feeds = list(iter(reader.get_next, None))
    reader.rewind()
    return AgreementGate(feeds[:gate_limit] if gate_limit else feeds, rules.max_drop, rules.max_logit_error, threads)
