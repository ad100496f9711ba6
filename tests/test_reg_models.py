"""Every registered model, parametrized over the three registries (segmenters ``MODELS``,
``CLASSIFIERS``, ``REFINERS``): it builds, runs a forward pass on a tiny input with the output
shapes its docstring states, rebuilds from its checkpoint config, and (segmenters and
classifiers) exports to ONNX that passes the exporter's checks (``onnx.checker``, ONNX Runtime
parity, TensorRT parser rules) and matches torch again on an input of our own in the device's
``OrtBackend``. The full-width U²-Net (49M parameters, a 197 MB graph) is not exported: its
structure is checked by a parameter count computed from the RSU definition.
(The refiner's two-graph export is exercised in tests/test_refiner.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from device.contracts import constants as const
from device.models.backends import OrtBackend
from export.classifier_export import export_condition_classifier, export_disease_classifier
from export.onnx_export import export_segmenter
from server_train.models import MODELS, build_from_config, create, model_config
from server_train.models.classifier import (
    CLASSIFIERS,
    ConditionClassifier,
    DenseConditionClassifier,
    classifier_config,
    classifier_from_config,
    create_classifier,
)
from server_train.models.refiner import REFINERS, refiner_from_config
from server_train.models.u2net import U2Net

NOT_EXPORTED = {"u2net"}  # paper-size: parameter count only
EXPORT_H, EXPORT_W = 64, 96  # segmenter export size: small, not a multiple of 32 on both sides


def _outputs(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A model's output as a tuple (the disease classifier returns one tensor)."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_bn_relu(cin: int, cout: int) -> int:
    """3x3 conv without bias, then BatchNorm (weight, bias)."""
    return 9 * cin * cout + 2 * cout


def _rsu(depth: int, cin: int, mid: int, cout: int) -> int:
    """RSU-L (and RSU-4F, which has RSU-4's layers with dilations): input conv, L-1 encoder
    convs (the first cout -> mid), a bottom conv, L-1 decoder convs on concatenations."""
    encoder = _conv_bn_relu(cout, mid) + (depth - 2) * _conv_bn_relu(mid, mid)
    decoder = (depth - 2) * _conv_bn_relu(2 * mid, mid) + _conv_bn_relu(2 * mid, cout)
    return _conv_bn_relu(cin, cout) + encoder + _conv_bn_relu(mid, mid) + decoder


def _u2net_params(mids: list[int], outs: list[int], out_ch: int) -> int:
    """Encoders RSU-7,6,5,4,4F,4F; decoder stage i mirrors encoder stage i and reads
    cat(up(stage i+1), encoder i); a 3x3 side conv per stage and a 1x1 fuse (both with bias)."""
    ins = [3, *outs[:5]]
    total = sum(_rsu(d, ins[i], mids[i], outs[i]) for i, d in enumerate((7, 6, 5, 4, 4, 4)))
    total += sum(_rsu(d, outs[i + 1] + outs[i], mids[i], outs[i]) for i, d in enumerate((7, 6, 5, 4, 4)))
    total += sum(9 * c * out_ch + out_ch for c in outs)
    return total + 6 * out_ch * out_ch + out_ch


def _student_params(widths: list[int], head: int, out_ch: int) -> int:
    """Stride-2 stem and four downs (strided conv + BN + ReLU, then a 3x3), four FPN ups
    (1x1 projection to the skip width, 3x3 refine), a full-resolution head, a 1x1 output."""
    ins = [3, *widths[:4]]
    downs = sum(9 * a * b + 2 * b + _conv_bn_relu(b, b) for a, b in zip(ins, widths, strict=True))
    ups = sum(widths[i + 1] * widths[i] + _conv_bn_relu(widths[i], widths[i]) for i in range(4))
    full = _conv_bn_relu(3, head) + widths[0] * head + _conv_bn_relu(head, head)
    return downs + ups + full + head * out_ch + out_ch


# --------------------------------------------------------------------------- segmenters


@pytest.mark.parametrize("name", sorted(MODELS))
def test_segmenter_forward_shapes(name: str) -> None:
    model = create(name).eval()
    x = torch.randn(2, 3, 40, 56)  # not a multiple of the stride 32: every resize must realign
    with torch.no_grad():
        outs = model(x)
    # U²-Net family: the fused map, then the six side outputs; the student: one map.
    assert len(outs) == (7 if isinstance(model, U2Net) else 1)
    for out in outs:
        assert out.shape == (2, 2, 40, 56) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Frames are independent: the second item does not change the first one's output.
    with torch.no_grad():
        alone = model(x[:1])[0]
    torch.testing.assert_close(alone, outs[0][:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_segmenter_parameter_count_follows_its_structure(name: str) -> None:
    model = create(name)
    cfg = model_config(model)
    if cfg["family"] == "u2net":
        expected = _u2net_params(cfg["mids"], cfg["outs"], cfg["out_ch"])
    else:
        expected = _student_params(cfg["widths"], cfg["head"], cfg["out_ch"])
    assert _params(model) == expected


def test_u2netp_has_the_papers_model_size() -> None:
    # Qin et al. 2020 give the small U²-Net† as a 4.7 MB model: float32 weights and BatchNorm
    # statistics of the registry's widths with the paper's single output map (ours has two).
    cfg = model_config(create("u2netp"))
    state = U2Net(cfg["mids"], cfg["outs"], out_ch=1).state_dict()
    size_mb = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
    assert size_mb == pytest.approx(4.7, rel=0.05)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_segmenter_rebuilds_from_its_checkpoint_config(name: str) -> None:
    model = create(name).eval()
    clone = build_from_config(model_config(model)).eval()
    clone.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x)[0], model(x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODELS) - NOT_EXPORTED))
def test_segmenter_exports_and_matches_torch_in_the_device_backend(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create(name).eval()
    # export_segmenter raises unless the checker, its own parity run and the TensorRT rules pass.
    path = export_segmenter(model, tmp_path / f"{name}.onnx", height=EXPORT_H, width=EXPORT_W)
    backend = OrtBackend(path, threads=1)
    assert backend.input_shapes == {const.SEG_INPUT: (1, 3, EXPORT_H, EXPORT_W)}
    assert backend.output_names == (const.SEG_OUT_MASK, const.SEG_OUT_CENTRE)
    x = torch.randn(1, 3, EXPORT_H, EXPORT_W, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        fused = model(x)[0].numpy()  # the raw model, not the export wrapper
    got = backend.run({const.SEG_INPUT: x.numpy()})
    np.testing.assert_allclose(got[const.SEG_OUT_MASK], fused[:, 0:1], atol=1e-3)
    np.testing.assert_allclose(got[const.SEG_OUT_CENTRE], fused[:, 1:2], atol=1e-3)


# --------------------------------------------------------------------------- classifiers


def _classifier_input(model: nn.Module, side: int = 32) -> torch.Tensor:
    """A small batch of 2: a tiled disease model needs a square side divisible by its grid."""
    if isinstance(model, DenseConditionClassifier):  # its top-k pooling is counted on the static input
        return torch.randn(2, 3, const.CLS_HEIGHT, const.CLS_WIDTH)
    if isinstance(model, ConditionClassifier):
        return torch.randn(2, 3, 64, 96)
    tiles = int(model.tiles)
    return torch.randn(2, 3, tiles * side, tiles * side)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_forward_shapes(name: str) -> None:
    model = create_classifier(name, pretrained=False).eval()
    with torch.no_grad():
        out = model(_classifier_input(model))
    if isinstance(model, (ConditionClassifier, DenseConditionClassifier)):
        levels, presence, area = out
        assert levels.shape == (2, len(const.CONDITION_NAMES), len(const.LEVEL_NAMES))
        assert presence.shape == area.shape == (2, len(const.CONDITION_NAMES))
        assert ((area > 0) & (area < 1)).all()  # a sigmoid share, never a logit
    else:
        assert out.shape == (2, len(const.DISEASE_NAMES))


@pytest.mark.parametrize("name", sorted(n for n in CLASSIFIERS if "lite0" in n))
def test_lite0_backbone_has_the_published_parameter_count(name: str) -> None:
    # EfficientNet-Lite0 with its 1280 -> 1000 ImageNet head has 4,652,008 parameters (timm's
    # efficientnet_lite0 as keras-hub lists it; "4.7M" in the TensorFlow release).
    backbone = create_classifier(name, pretrained=False).backbone
    assert _params(backbone) + 1280 * 1000 + 1000 == 4_652_008


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_rebuilds_from_its_checkpoint_config(name: str) -> None:
    model = create_classifier(name, pretrained=False).eval()
    clone = classifier_from_config(classifier_config(model)).eval()
    clone.load_state_dict(model.state_dict())
    x = _classifier_input(model)
    with torch.no_grad():
        torch.testing.assert_close(_outputs(clone(x)), _outputs(model(x)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_exports_and_matches_torch_in_the_device_backend(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_classifier(name, pretrained=False).eval()
    # The exporters raise unless the checker, their own parity run and the TensorRT rules pass.
    if isinstance(model, (ConditionClassifier, DenseConditionClassifier)):
        path = export_condition_classifier(model, tmp_path / f"{name}.onnx")
        shape, input_name = (1, 3, const.CLS_HEIGHT, const.CLS_WIDTH), const.CLS_INPUT
        outputs = (const.CLS_OUT_LEVELS, const.CLS_OUT_PRESENCE, const.CLS_OUT_AREA)
    else:
        path = export_disease_classifier(model, tmp_path / f"{name}.onnx")
        side = const.DISEASE_SIZE * int(model.tiles)
        shape, input_name, outputs = (1, 3, side, side), const.DISEASE_INPUT, (const.DISEASE_OUT_LOGITS,)
    backend = OrtBackend(path, threads=1)
    assert backend.input_shapes == {input_name: shape} and backend.output_names == outputs
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = _outputs(model(x))
    got = backend.run({input_name: x.numpy()})
    for out_name, expected in zip(outputs, ref, strict=True):
        np.testing.assert_allclose(got[out_name], expected.numpy(), atol=1e-3)


# --------------------------------------------------------------------------- refiners


@pytest.mark.parametrize("name", sorted(REFINERS))
def test_refiner_forward_shapes_and_config_round_trip(name: str) -> None:
    torch.manual_seed(0)
    model = REFINERS[name]().eval()
    clone = refiner_from_config(model.config).eval()
    clone.load_state_dict(model.state_dict())
    h, w = model.image_size
    frame = torch.randn(1, 3, h, w)
    coords = torch.tensor([[[100.0, 80.0], [300.0, 200.0]]] * 3)  # 3 groups of 2 points, (x, y) px
    labels = torch.tensor([[1.0, 0.0]] * 3)
    with torch.no_grad():
        emb = model.embed(frame)
        masks, iou = model(frame, coords, labels)
        again, _ = clone(frame, coords, labels)
    # Embedding at 1/16 of the frame; masks at mask_scale x the embedding; one IoU per group.
    assert emb.shape == (1, model.encoder.config["embed_dim"], h // 16, w // 16)
    s = model.mask_scale
    assert masks.shape == (3, 1, s * (h // 16), s * (w // 16)) and iou.shape == (3, 1)
    torch.testing.assert_close(again, masks)
