"""Signed bundles: build, verify, refuse tampering, pick variants; the CLI's exit codes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from device.cli import main
from device.contracts.validation import ContractError
from device.models.backends import open_backend
from device.models.bundle import Bundle, BundleError
from export.bundle import build_bundle, generate_key
from tests.onnx_graphs import conv_net, save


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "release.pem", tmp_path / "trusted" / "release.pem"
    generate_key(private, public)
    return private, public


def _card(folder: Path, name: str = "segmenter") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save(conv_net(), folder / f"{name}.onnx")
    save(conv_net(seed=1), folder / f"{name}.int8-ort-cpu.onnx")
    card = {
        "name": name,
        "task": "hair-segmentation",
        "preprocessing": {"colour": "RGB"},
        "thresholds": {"mask": 0.5},
        "class_names": None,
        "provenance": {"seed": 5},
        "variants": [
            {"file": f"{name}.onnx", "precision": "fp32", "targets": ["onnxruntime-cpu", "tensorrt"]},
            {"file": f"{name}.int8-ort-cpu.onnx", "precision": "int8", "targets": ["onnxruntime-cpu"]},
        ],
        "preferred": {"onnxruntime-cpu": f"{name}.int8-ort-cpu.onnx", "tensorrt": f"{name}.onnx"},
    }
    path = folder / f"{name}.card.json"
    path.write_text(json.dumps(card))
    return path


@pytest.fixture()
def bundle_dir(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    out = tmp_path / "bundle"
    build_bundle(out, [_card(tmp_path / "release")], keys[0], version="test-1")
    return out


def test_built_bundle_verifies_and_describes_its_files(bundle_dir: Path, keys: tuple[Path, Path]) -> None:
    bundle = Bundle.open(bundle_dir, trusted_keys=[keys[1]])
    assert bundle.version == "test-1"
    assert bundle.models == ["segmenter"]
    fp32 = bundle.select("segmenter", "tensorrt")
    assert fp32.precision == "fp32" and fp32.path.name == "segmenter.onnx"
    assert fp32.inputs == {"image": {"shape": [1, 3, 32, 32], "dtype": "float32"}}
    assert fp32.outputs == {"out": {"shape": [1, 4, 32, 32], "dtype": "float32"}}
    assert bundle.select("segmenter", "onnxruntime-cpu").precision == "int8"
    assert bundle.select("segmenter", "onnxruntime-cpu", precision="fp32").path.name == "segmenter.onnx"
    with pytest.raises(BundleError, match="no int8 variant of 'segmenter' for tensorrt"):
        bundle.select("segmenter", "tensorrt", precision="int8")
    backend = open_backend(fp32.path, "onnxruntime", threads=1)
    out = backend.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert out["out"].shape == (1, 4, 32, 32) and backend.last_ms > 0


@pytest.mark.parametrize("offset", [0, 1000, -1])
def test_one_changed_byte_in_a_model_is_refused_naming_the_file(bundle_dir: Path, keys, offset: int) -> None:
    target = bundle_dir / "segmenter.int8-ort-cpu.onnx"
    data = bytearray(target.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"segmenter\.int8-ort-cpu\.onnx: sha256 .* file altered"):
        Bundle.open(bundle_dir, trusted_keys=[keys[1]])


def test_changed_manifest_is_refused(bundle_dir: Path, keys) -> None:
    manifest = bundle_dir / "manifest.json"
    text = manifest.read_text()
    # Point the TensorRT preference at another file: valid JSON, same hashes, broken signature.
    manifest.write_text(text.replace('"tensorrt": "segmenter.onnx"', '"tensorrt": "segmenter.int8-ort-cpu.onnx"'))
    assert manifest.read_text() != text
    with pytest.raises(BundleError, match="manifest.json: signature does not match"):
        Bundle.open(bundle_dir, trusted_keys=[keys[1]])


def test_truncated_file_and_missing_file_and_untrusted_key(bundle_dir: Path, keys, tmp_path: Path) -> None:
    other_private, other_public = tmp_path / "other.pem", tmp_path / "other.pub.pem"
    generate_key(other_private, other_public)
    with pytest.raises(BundleError, match="not trusted"):
        Bundle.open(bundle_dir, trusted_keys=[other_public])
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    (copy / "segmenter.onnx").write_bytes((copy / "segmenter.onnx").read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"segmenter\.onnx: size .* file altered"):
        Bundle.open(copy, trusted_keys=[keys[1]])
    (copy / "segmenter.onnx").unlink()
    with pytest.raises(BundleError, match=r"segmenter\.onnx: listed in the manifest but missing"):
        Bundle.open(copy, trusted_keys=[keys[1]])
    (copy / "signature.json").unlink()
    with pytest.raises(BundleError, match="signature.json: missing"):
        Bundle.open(copy, trusted_keys=[keys[1]])


def test_file_names_cannot_leave_the_bundle(tmp_path: Path, keys) -> None:
    from export.bundle import sign_bundle

    out = tmp_path / "b"
    build_bundle(out, [_card(tmp_path / "r")], keys[0])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["models"]["segmenter"]["variants"][0]["file"] = "../r/segmenter.onnx"
    (out / "manifest.json").write_text(json.dumps(manifest))
    sign_bundle(out, keys[0])  # even a correctly signed manifest may not point outside
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.open(out, trusted_keys=[keys[1]])


def test_build_refuses_bad_cards_and_non_empty_output(tmp_path: Path, keys) -> None:
    card = _card(tmp_path / "r")
    data = json.loads(card.read_text())
    data["variants"][0]["targets"] = ["coreml"]
    card.write_text(json.dumps(data))
    with pytest.raises(ContractError, match=r"segmenter\.card\.json: variants/0/targets/0: 'coreml' is not one of"):
        build_bundle(tmp_path / "b", [card], keys[0])
    assert not (tmp_path / "b").exists()  # every card is checked before anything is written
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(FileExistsError):
        build_bundle(busy, [_card(tmp_path / "r2")], keys[0])


def test_cli_verify_and_info_exit_codes(bundle_dir: Path, keys, capsys) -> None:
    assert main(["bundle", "verify", str(bundle_dir), "--trust", str(keys[1])]) == 0
    assert "2 files verified" in capsys.readouterr().out
    assert main(["bundle", "info", str(bundle_dir), "--trust", str(keys[1])]) == 0
    assert "segmenter.int8-ort-cpu.onnx: int8 for onnxruntime-cpu" in capsys.readouterr().out
    (bundle_dir / "segmenter.onnx").write_bytes(b"\0" + (bundle_dir / "segmenter.onnx").read_bytes()[1:])
    assert main(["bundle", "verify", str(bundle_dir), "--trust", str(keys[1])]) == 4
    err = capsys.readouterr().err
    assert "model bundle REFUSED:" in err and "segmenter.onnx: sha256" in err


def test_segment_refuses_a_tampered_bundle_and_runs_a_good_one(tmp_path: Path, capsys) -> None:
    """The README main job path: `scalpedge segment` loads the shipped bundle through the
    backend interface; a copy with one flipped byte is refused (exit 4) naming the file."""
    from device.assets import default_bundle_path, sample_frames

    good = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), good)
    frame = str(sample_frames()[0])
    assert main(["segment", frame, "--bundle", str(good), "--out", str(tmp_path / "ok")]) == 0
    report = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert report["bundle_version"] and report["model"].startswith("segmenter")
    target = good / "segmenter.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["segment", frame, "--bundle", str(good), "--precision", "int8", "--out", str(tmp_path / "no")]) == 4
    err = capsys.readouterr().err
    assert "model bundle REFUSED" in err and "segmenter.onnx: sha256" in err
    assert not (tmp_path / "no" / "metrics.json").exists()


def test_unpack_then_rebuild_with_a_rotated_key_keeps_the_models(bundle_dir: Path, keys, tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    assert main(["bundle", "unpack", str(bundle_dir), str(unpacked), "--trust", str(keys[1])]) == 0
    cards = sorted(unpacked.glob("*.card.json"))
    assert [c.name for c in cards] == ["segmenter.card.json"]
    new_private, new_public = tmp_path / "k2" / "new.pem", tmp_path / "t2" / "new.pem"
    generate_key(new_private, new_public)
    rebuilt = tmp_path / "rebuilt"
    build_bundle(rebuilt, cards, new_private, version="test-2")
    new = Bundle.open(rebuilt, trusted_keys=[new_public])
    assert new.version == "test-2"
    assert (
        json.loads((rebuilt / "manifest.json").read_text())["models"]
        == json.loads((bundle_dir / "manifest.json").read_text())["models"]
    )
    with pytest.raises(BundleError):  # the old key does not vouch for the re-signed bundle
        Bundle.open(rebuilt, trusted_keys=[keys[1]])
    # an untrusted source bundle is refused, and nothing is written
    assert main(["bundle", "unpack", str(bundle_dir), str(tmp_path / "u2")]) == 4
    assert not (tmp_path / "u2").exists()
