#!/usr/bin/env bash
# Reproduce the shipped default segmenter (device/assets/default) and its reports from scratch
# on a CPU: synthetic data, U²-Net teacher, student pre-training on pseudo-labels, distillation
# from the teacher, evaluation, release. Steps resume where they stopped (run folders keep
# last.pt). Real-data reports need ../shared/data (DATA=path to override).
#   bash benchmarks/make_default_model.sh            # everything
#   STAGE=eval bash benchmarks/make_default_model.sh # only the evaluation and release
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/scalpedge
DATA=${DATA:-../shared/data}
STAGE=${STAGE:-all}
DISTIL_STEPS=${DISTIL_STEPS:-800}

if [ "$STAGE" = all ]; then
  # The recipe as it ran for the shipped model (stages paused with --stop-after are where a
  # run was stopped and its last.pt reused). Data written at the commits named; today's
  # generator gives similar, not identical, frames for the first two sets.
  [ -f data/train/truth.jsonl ] || $S synth --n 2400 --seed 1 --out data/train --mode mixed --workers 2            # 7352e0e
  [ -f data/train_hard/truth.jsonl ] || $S synth --n 800 --seed 2 --out data/train_hard --mode mixed --hard --workers 2  # 7352e0e
  [ -f data/train_trim2/truth.jsonl ] || $S synth --n 800 --seed 3 --out data/train_trim2 --mode trimmed          # 69d9a13
  [ -f data/heldout/truth.jsonl ] || $S synth --n 300 --seed 20261122 --out data/heldout --mode mixed --hard --workers 2  # 7352e0e
  # Sets with centre-line maps (commit 9c8dca7 or later):
  [ -f data/train3/truth.jsonl ] || $S synth --n 2000 --seed 11 --out data/train3 --mode mixed --workers 2
  [ -f data/train3_trim/truth.jsonl ] || $S synth --n 1000 --seed 12 --out data/train3_trim --mode trimmed --workers 2
  [ -f data/train3_hard/truth.jsonl ] || $S synth --n 600 --seed 14 --out data/train3_hard --mode mixed --hard --workers 2
  [ -f data/val3/truth.jsonl ] || $S synth --n 150 --seed 13 --out data/val3 --mode mixed
  T3=data/train3,data/train3_trim,data/train3_hard
  # Teacher stage 1 (paused at 500 of 1000 steps), in parallel with student stage A (1350 of 5000).
  $S train seg --data data/train,data/train_hard --out runs/teacher --model teacher \
     --steps 1000 --stop-after 500 --batch 8 --crop 192 --threads 1 --seed 0 --quiet &
  $S train seg --data data/train,data/train_hard --out runs/student_gt --model student \
     --steps 5000 --stop-after 1350 --batch 8 --crop 192 --threads 1 --seed 0 --quiet
  cp runs/student_gt/last.pt runs/student_gt/stage_a.pt
  # Student stage B: CenterNet focal loss on hair midpoints (paused at 1200 of 3000).
  $S train seg --data data/train,data/train_hard,data/train_trim2 --out runs/student_gt2 --model student \
     --init-checkpoint runs/student_gt/stage_a.pt --centre-loss focal --centre-weight 0.5 \
     --steps 3000 --stop-after 1200 --batch 8 --crop 192 --lr 0.002 --threads 1 --seed 1 --quiet
  cp runs/student_gt2/last.pt runs/student_gt2/stage_b.pt
  wait
  cp runs/teacher/last.pt runs/teacher/stage_1.pt
  # Teacher stage 2 and student stage C (centre-line instance head) in parallel.
  $S train seg --data "$T3" --out runs/teacher2 --model teacher --init-checkpoint runs/teacher/stage_1.pt \
     --steps 450 --warmup 10 --batch 8 --crop 192 --lr 0.002 --threads 1 --seed 4 --quiet &
  $S train seg --data "$T3" --out runs/student_lines --model student --init-checkpoint runs/student_gt2/stage_b.pt \
     --instance-target lines --centre-loss lines --centre-weight 1.0 \
     --steps 2500 --batch 8 --crop 192 --lr 0.002 --threads 1 --seed 3 --quiet
  wait
  # Distillation: mask from the teacher's soft masks + pseudo-GT, centre lines from pseudo-GT.
  $S train seg --data "$T3" --out runs/student --model student \
     --init-checkpoint runs/student_lines/final.pt --teacher-checkpoint runs/teacher2/final.pt \
     --instance-target lines --centre-loss lines --centre-weight 1.0 --no-kd-centre \
     --steps "$DISTIL_STEPS" --batch 8 --crop 192 --lr 0.001 --threads 2 --seed 5 --quiet
fi

mkdir -p benchmarks/reports
$S export seg --checkpoint runs/student/final.pt --out runs/student.onnx
for m in runs/teacher2/final.pt runs/student.onnx blackhat_otsu ridge; do
  name=$(basename "$(dirname "$m")")
  case "$m" in runs/student.onnx) name=student;; blackhat_otsu|ridge) name=$m;; esac
  $S eval seg --data data/heldout --model "$m" --stage coarse --out "benchmarks/reports/heldout_${name}.json"
done
$S eval counts --data "$DATA/follicle-counts/val" --model runs/student.onnx --stage coarse --out benchmarks/reports/follicle_counts_student.json
$S eval counts --data "$DATA/follicle-counts/val" --model runs/teacher2/final.pt --stage coarse --out benchmarks/reports/follicle_counts_teacher.json
$S eval sheet --data "$DATA/scalp-microscope/valid/images" --model runs/student.onnx --out benchmarks/reports/student_scalp_microscope_valid.png
$S bench speed --out benchmarks/reports/speed.json --threads 1,2
# Release: FP32 ONNX + model card, INT8 variants gated on held-out Dice, then the signed bundle.
# The signing key stays off the repo (make one once with `scalpedge bundle keygen`; its public
# half goes to device/assets/keys/). The shipped bundle also holds the classifiers and the
# prompt refiner: EXTRA_CARDS="runs/cls_release/*.card.json runs/refiner_release/*.card.json"
# (benchmarks/make_classifiers.sh, benchmarks/make_refiner.sh). To replace one model of an
# existing bundle: `scalpedge bundle unpack device/assets/default runs/unpacked`, swap its card
# and files, and build from the unpacked cards.
$S export release --checkpoint runs/student/final.pt --out runs/release \
   --metrics benchmarks/reports/heldout_student.json benchmarks/reports/follicle_counts_student.json benchmarks/reports/speed.json
$S calibrate int8 --card runs/release/segmenter.card.json --frames data/train3 data/train3_trim data/train3_hard \
   --gate-data data/heldout --gate-limit 300 --runs 30
rm -rf runs/bundle
$S bundle build runs/bundle --card runs/release/segmenter.card.json ${EXTRA_CARDS:-} --key "${SIGNING_KEY:-runs/keys/scalpedge-release-2026b.pem}"
rm -f device/assets/default/*.onnx device/assets/default/*.json && cp runs/bundle/* device/assets/default/
$S bundle verify device/assets/default
$S bench speed --precision fp32,int8 --out benchmarks/reports/speed_int8.json --runs 30
# Sample frames for `scalpedge segment` with no paths: synthetic frames (ours to ship).
$S synth --n 2 --seed 7 --out runs/samples --mode scalp --no-progress
$S synth --n 1 --seed 7 --out runs/samples_trimmed --mode trimmed --no-progress
mkdir -p device/assets/samples
.venv/bin/python - <<'PY'
import cv2, pathlib
for folder, prefix in (("runs/samples", "synthetic_"), ("runs/samples_trimmed", "synthetic_trimmed_")):
    for p in sorted(pathlib.Path(folder, "images").glob("*.png")):
        cv2.imwrite(f"device/assets/samples/{prefix}{p.stem}.jpg", cv2.imread(str(p)), [cv2.IMWRITE_JPEG_QUALITY, 92])
PY
