"""Example masks of the hair-photo networks on validation photos (issue 17 results page).

    python benchmarks/hair_photo_examples.py --data ../shared/data/figaro1k/training \\
        --models lite0_unet=runs/hp/lite0_unet/export/hair_photo.onnx ... \\
        --out benchmarks/reports/hair_photo_examples.png

One row per photo (``--n`` spread over the val split): the true mask, then each model's errors
against it (white: hair found, red: false hair, blue: hair missed, black: background) with its
mIoU on that photo. Figaro-1k is for research use, so the committed figure holds masks only;
``--with-photos`` adds the photo and tints each model's mask on it (for a local look).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from device.capture.imageio import read_frame
from device.models.hair_photo import HairPhotoSegmenter
from scoring.seg_metrics import confusion, miou
from server_train.hair_photo.split import split_pairs

CELL = 200


def _cell(image: np.ndarray, label: str) -> np.ndarray:
    h, w = image.shape[:2]
    scale = CELL / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    out = np.full((CELL + 22, CELL, 3), 255, np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    cv2.putText(out, label, (4, CELL + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _tinted(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = photo.copy()
    out[mask] = (0.45 * out[mask] + 0.55 * np.array([255, 0, 255])).astype(np.uint8)
    return out


def _errors(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """HxW bool prediction vs truth -> HxWx3 BGR: white hit, red false hair, blue missed hair."""
    out = np.zeros((*truth.shape, 3), np.uint8)
    out[mask & truth] = (255, 255, 255)
    out[mask & ~truth] = (0, 0, 255)
    out[~mask & truth] = (255, 0, 0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", nargs="+", required=True, help="NAME=hair_photo.onnx")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--out", required=True)
    p.add_argument("--with-photos", action="store_true", help="show the photos (not for the repository)")
    args = p.parse_args()
    models = [(s.split("=", 1)[0], HairPhotoSegmenter.from_onnx(s.split("=", 1)[1], threads=2)) for s in args.models]
    pairs = split_pairs(args.data, "val")
    rows = []
    for image_path, mask_path in pairs[:: max(1, len(pairs) // args.n)][: args.n]:
        photo = read_frame(image_path)
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        if args.with_photos:
            cells = [_cell(photo, image_path.stem), _cell(_tinted(photo, truth), "truth")]
        else:
            cells = [_cell(np.repeat(truth[..., None], 3, axis=2).astype(np.uint8) * 255, f"{image_path.stem} truth")]
        for name, seg in models:
            mask = seg.segment(photo).mask
            shown = _tinted(photo, mask) if args.with_photos else _errors(mask, truth)
            cells.append(_cell(shown, f"{name} {miou(confusion(mask, truth)):.3f}"))
        rows.append(np.hstack(cells))
    cv2.imwrite(args.out, np.vstack(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
