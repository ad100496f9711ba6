#!/usr/bin/env bash
# Reproduce the shipped counting segmenter (hair + thin-hair density heads learnt from real
# trichoscopy boxes) and its reports: fine-tune the label-free student (the previous bundle's
# segmenter graph) on the training subjects, train the plain supervised baseline (same network
# from scratch, same data and budget), score all three on the held-out subjects, fine-tune once
# more (stage 2), calibrate the count on the training subjects, train the per-hair class model
# (terminal / miniaturised) on the hairs the released segmenter locates, export, INT8, pack.
# Runs resume (last.pt).
#   bash benchmarks/make_counting_model.sh
# Needs ../shared/data/follicle-counts (DATA=path to override), data/heldout (the synthetic
# held-out set of make_default_model.sh, for the INT8 Dice gate) and the release key
# (SIGNING_KEY, default /work/release-keys/scalpedge-release-2026e.pem; kept out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/scalpedge
DATA=${DATA:-../shared/data}
FC=$DATA/follicle-counts/train,$DATA/follicle-counts/val
INIT=${INIT:-runs/label_free/segmenter.onnx}  # the label-free student of bundle 2026.11.29.1625
R=benchmarks/reports
mkdir -p runs/eval runs/label_free

if [ ! -f "$INIT" ]; then  # the previous bundle's segmenter, from git
  git show 9b59078:device/assets/default/segmenter.onnx > "$INIT"
fi
[ -f data/heldout/truth.jsonl ] || $S synth --n 300 --seed 20261122 --out data/heldout --mode mixed --hard --workers 2

# Both runs: 1200 steps of 8 crops (320x240) on the training subjects (80 %), seed 0, 1 thread each.
$S train counts --data "$FC" --out runs/counts_ft --init-onnx "$INIT" --steps 1200 --lr 0.0005 --threads 1 --quiet
$S train counts --data "$FC" --out runs/counts_scratch --steps 1200 --threads 1 --quiet

# The comparison, on the held-out subjects (20 %, never trained on):
for m in "$INIT" runs/counts_scratch/final.pt runs/counts_ft/final.pt; do
  name=$(basename "$(dirname "$m")")
  $S eval counts --data "$FC" --split val --stage coarse --model "$m" --out "runs/eval/counts_val_$name.json" --threads 2
done

# Stage 2 (bundle 2026.12.04): 1500 more steps from stage 1's released graph (the bundle
# 2026.12.03.2013 segmenter, its densities x 1.2), lr 3e-4, seed 1; 18 min on 1 thread.
git show c8bedf0:device/assets/default/segmenter.onnx > runs/label_free/stage1.onnx
$S train counts --data "$FC" --out runs/counts_s2 --init-onnx runs/label_free/stage1.onnx --steps 1500 --lr 0.0003 \
   --seed 1 --threads 1 --quiet
$S eval counts --data "$FC" --split val --stage coarse --model runs/counts_s2/final.pt --hair-classes none \
   --out runs/eval/counts_val_s2.json --threads 2

# On 300 training-subject frames: the count calibration (sum of boxes / sum of predictions 1.17,
# and the MAE at x 1.1 / 1.15 / 1.2 / 1.25: 1.70 / 1.66 / 1.69 / 1.88, so 1.15).
$S eval counts --data "$FC" --split train --limit 300 --stage coarse --model runs/counts_s2/final.pt \
   --hair-classes none --out runs/eval/counts_train_s2.json --threads 2
.venv/bin/python -c "
import json, numpy as np
r = json.load(open('runs/eval/counts_train_s2.json'))
t = np.array([x['true_count'] for x in r['per_frame']], float); p = np.array([x['pred_count'] for x in r['per_frame']], float)
print('sum ratio', t.sum() / p.sum(), {k: np.abs(np.round(p * k) - t).mean() for k in (1.1, 1.15, 1.2, 1.25)})"

# Release: ONNX + card (densities x 1.15), INT8 (calibrated on training frames as the device sees
# them), the per-hair class model (patches cut where this segmenter locates hairs on the
# training subjects; its threshold chosen on tuning subjects it never trained on), bundle.
$S export release --checkpoint runs/counts_s2/final.pt --out runs/release_counts --count-scale 1.15 \
   --metrics runs/eval/counts_val_s2.json
# Since 2026-12-05 the class model is the two-field pair with three classes, 3000 steps; its
# threshold and share scale are chosen on the tuning subjects, then it is trained again on the
# training + tuning subjects (--refit; about 25 min at 2 threads).
$S train hair-classes --data "$FC" --out runs/hair_classes_loc --segmenter runs/release_counts/segmenter.onnx \
   --kind pair --classes 3 --steps 3000 --refit --threads 2 --quiet
# Since 2026-12-06 without the mirrored passes (half the cost, no loss: docs/results/counts.md).
$S export hair-classes --checkpoint runs/hair_classes_loc/refit/final.pt --no-mirror --out runs/hair_release_loc
rm -rf runs/calib_real && mkdir -p runs/calib_real
.venv/bin/python - "$FC" <<'PY'
import sys, cv2
from server_train.training.trichoscopy import frame_and_points, load_labelled, subject_split
train, _ = subject_split(load_labelled(sys.argv[1].split(",")))
for item in train[::8]:
    cv2.imwrite(f"runs/calib_real/{item.stem}.png", frame_and_points(item)[0])
PY
$S calibrate int8 --card runs/release_counts/segmenter.card.json --frames runs/calib_real data/heldout \
   --gate-data data/heldout --gate-limit 300 --runs 30
rm -rf runs/unpacked runs/bundle
$S bundle unpack device/assets/default runs/unpacked
$S bundle build runs/bundle --card runs/release_counts/segmenter.card.json runs/hair_release_loc/hair_classes.card.json \
   $(ls runs/unpacked/*.card.json | grep -v -e segmenter -e hair_classes) \
   --key "${SIGNING_KEY:-.release-keys/scalpedge-release-2026i.pem}"
rm -f device/assets/default/*.onnx device/assets/default/*.json && cp runs/bundle/* device/assets/default/
$S bundle verify device/assets/default

# Reports of the shipped bundle (default flags score what ships). Then the held-out reports are
# recorded in the segmenter's card (its "evaluation") and the bundle is packed again from it:
#   python: card["evaluation"][name] = report without per_frame, for follicle_counts_val,
#   follicle_counts_int8_agreement and count_scale; then the same `bundle build` as above.
$S eval counts --data "$FC" --split val --stage coarse --out $R/follicle_counts_val.json --plot $R/follicle_counts_val.png
for v in int8-ort-cpu int8-tensorrt; do
  $S eval counts --data "$FC" --split val --stage coarse --model device/assets/default/segmenter.$v.onnx \
     --out runs/eval/counts_val_$v.json
done
.venv/bin/python benchmarks/hair_class_threshold.py --data "$FC" --model device/assets/default/segmenter.onnx \
   --hair-classes device/assets/default/hair_classes.onnx --out $R/hair_class_threshold.json  # tuning subjects only
.venv/bin/python benchmarks/count_agreement.py $R/follicle_counts_val.json runs/eval/counts_val_int8-*.json \
   --out $R/follicle_counts_int8_agreement.json
.venv/bin/python benchmarks/count_scale.py --data "$FC" --split train --scales 1.0,1.25,1.5 --out runs/eval/scale_train.json  # PADDED_EDGE_PX
.venv/bin/python benchmarks/count_scale.py --data "$FC" --out $R/count_scale.json
$S bench speed --models student,u2netp --threads 1,2 --runs 10 --out $R/speed_counting.json
$S bench speed --precision fp32,int8 --out $R/speed_int8.json --runs 30
