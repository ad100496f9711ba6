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
TEACHER_STEPS=${TEACHER_STEPS:-1000}
STUDENT_STEPS=${STUDENT_STEPS:-5000}
DISTIL_STEPS=${DISTIL_STEPS:-1200}

if [ "$STAGE" = all ]; then
  [ -f data/train/truth.jsonl ] || $S synth --n 2400 --seed 1 --out data/train --mode mixed --workers 2
  [ -f data/train_hard/truth.jsonl ] || $S synth --n 800 --seed 2 --out data/train_hard --mode mixed --hard --workers 2
  [ -f data/heldout/truth.jsonl ] || $S synth --n 300 --seed 20261122 --out data/heldout --mode mixed --hard --workers 2
  # Teacher and student pre-training share the two cores, one thread each.
  $S train seg --data data/train,data/train_hard --out runs/teacher --model teacher \
     --steps "$TEACHER_STEPS" --batch 8 --crop 192 --threads 1 --seed 0 &
  $S train seg --data data/train,data/train_hard --out runs/student_gt --model student \
     --steps "$STUDENT_STEPS" --batch 8 --crop 192 --threads 1 --seed 0 &
  wait
  $S train seg --data data/train,data/train_hard --out runs/student --model student \
     --init-checkpoint runs/student_gt/final.pt --teacher-checkpoint runs/teacher/final.pt \
     --steps "$DISTIL_STEPS" --batch 8 --crop 192 --lr 0.001 --threads 2 --seed 0
fi

mkdir -p benchmarks/reports
$S export seg --checkpoint runs/student/final.pt --out runs/student.onnx
for m in runs/teacher/final.pt runs/student.onnx blackhat_otsu ridge; do
  name=$(basename "$(dirname "$m")")
  case "$m" in runs/student.onnx) name=student;; blackhat_otsu|ridge) name=$m;; esac
  $S eval seg --data data/heldout --model "$m" --out "benchmarks/reports/heldout_${name}.json"
done
$S eval counts --data "$DATA/follicle-counts/val" --model runs/student.onnx --out benchmarks/reports/follicle_counts_student.json
$S eval counts --data "$DATA/follicle-counts/val" --model runs/teacher/final.pt --out benchmarks/reports/follicle_counts_teacher.json
$S eval sheet --data "$DATA/scalp-microscope/valid/images" --model runs/student.onnx --out benchmarks/reports/student_scalp_microscope_valid.png
$S bench speed --out benchmarks/reports/speed.json --threads 1,2
$S export release --checkpoint runs/student/final.pt --out device/assets/default \
   --metrics benchmarks/reports/heldout_student.json benchmarks/reports/follicle_counts_student.json benchmarks/reports/speed.json
# Sample frames for `scalpedge segment` with no paths: three synthetic frames (ours to ship).
$S synth --n 3 --seed 7 --out runs/samples --mode mixed --no-progress
mkdir -p device/assets/samples
.venv/bin/python - <<'PY'
import cv2, pathlib
for p in sorted(pathlib.Path("runs/samples/images").glob("*.png")):
    cv2.imwrite(f"device/assets/samples/synthetic_{p.stem}.jpg", cv2.imread(str(p)), [cv2.IMWRITE_JPEG_QUALITY, 92])
PY
