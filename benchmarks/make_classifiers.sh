#!/usr/bin/env bash
# Reproduce the shipped scalp classifiers (device/assets/default: severity, alopecia, disease and
# their model cards) and their reports on a CPU. INT8 goes through calibration/ like every model:
# the model's recipe rules (calibration/rules.py), then the accuracy gate against FP32. Steps resume (run folders keep last.pt and
# feature caches). Real-data steps need ../shared/data (DATA=path to override).
#   bash benchmarks/make_classifiers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/scalpedge
DATA=${DATA:-../shared/data}
R=benchmarks/reports
A=device/assets/default
MS=$DATA/scalp-microscope
export OMP_NUM_THREADS=1

# 1. Synthetic condition sets: training and held-out with AI-Hub level shares, a uniform set for
#    the alopecia grader.
[ -f data/cls/train/labels.jsonl ] || $S synth --conditions aihub --n 2400 --seed 100 --out data/cls/train --no-progress
[ -f data/cls/heldout/labels.jsonl ] || $S synth --conditions aihub --n 800 --seed 200 --out data/cls/heldout --no-progress
[ -f data/cls/alo_train/labels.jsonl ] || $S synth --conditions uniform --n 1000 --seed 300 --out data/cls/alo_train --no-progress

# 2. Severity classifier, with and without inverse-frequency sampling (shared feature cache).
for run in sev_invfreq sev_plain; do
  flag=""; [ $run = sev_plain ] && flag="--no-inverse-freq"
  $S train classifier --synth data/cls/train --real "$MS/train" --out runs/cls/$run --cache runs/cls/cache --steps 500 $flag
  $S export classifier --checkpoint runs/cls/$run/final.pt --out runs/cls/$run/severity.onnx \
    --int8 runs/cls/$run/severity.int8.onnx --calib "$MS/train" data/cls/train --calib-n 128
done
for run in sev_invfreq sev_plain; do
  for v in severity severity.int8; do
    $S eval synth-conditions --data data/cls/heldout --model runs/cls/$run/$v.onnx --out $R/cls_${run}_${v}_heldout.json --figures $R
    $S eval conditions --data "$MS/valid" --model runs/cls/$run/$v.onnx --out $R/cls_${run}_${v}_microscope_valid.json
  done
done
$S bench classifiers --models runs/cls/sev_invfreq/severity.onnx,runs/cls/sev_invfreq/severity.int8.onnx \
  --threads 1,2 --out $R/cls_latency.json

# 2b. Grader that holds on real frames (shipped in bundle 2026.12.04.1426): polygon map head
#    (severity_dense_lite0), real frames split by original (80/20, sha256 of the original's name),
#    presence thresholds chosen on the held-out originals (runs/cls/sev_dense/heldout.json) and
#    carried by the graph and card. INT8 was refused by the gate (agreement drop 5.21 pt > 5), so
#    the FP32 file ships; the INT8 attempt is kept to show it (it exits non-zero when refused).
$S train classifier --synth data/cls/train --real "$MS/train" --out runs/cls/sev_dense --cache runs/cls/cache_dense \
  --steps 600 --eval-every 100 --threads 1
$S export classifier --checkpoint runs/cls/sev_dense/final.pt --out runs/cls/sev_dense/severity.onnx \
  --int8 runs/cls/sev_dense/severity.int8.onnx --calib "$MS/train" data/cls/train --calib-n 128 || true
$S eval conditions --data "$MS/train" --originals holdout --model runs/cls/sev_dense/severity.onnx \
  --out $R/cls_sev_dense_severity_microscope_holdout.json
$S eval conditions --data "$MS/valid" --model runs/cls/sev_dense/severity.onnx --out $R/cls_sev_dense_severity_microscope_valid.json
$S eval synth-conditions --data data/cls/heldout --model runs/cls/sev_dense/severity.onnx --out $R/cls_sev_dense_severity_heldout.json
$S export classifier-card --dir runs/cls_real_release --kind severity --fp32 runs/cls/sev_dense/severity.onnx \
  --default-precision fp32 --thresholds runs/cls/sev_dense/heldout.json --command "bash benchmarks/make_classifiers.sh (step 2b)" \
  --metrics $R/cls_sev_dense_severity_microscope_valid.json $R/cls_sev_dense_severity_microscope_holdout.json \
  $R/cls_sev_dense_severity_heldout.json
# Then: bundle unpack device/assets/default, bundle build with runs/cls_real_release/conditions.card.json
# in place of the unpacked conditions card (see make_counting_model.sh for the build/copy/verify).

# 2c. Cross-fitted ensemble (measured 2026-12-05, not shipped: 57.7 MB FP32, 13.4 ms vs 5.0 ms at 2
#    threads): the 2b recipe trained once per fold of the real originals (--fold k/5, same cache), one
#    graph averaging the five suffixes over the shared frozen prefix, presence thresholds chosen on
#    the pooled held-out folds (all 492 training frames) -> runs/cls/sev_ens/severity.heldout.json.
for k in 0 1 2 3 4; do
  $S train classifier --synth data/cls/train --real "$MS/train" --out runs/cls/sev_fold$k --cache runs/cls/cache_dense \
    --steps 600 --eval-every 100 --fold $k/5 --seed $k --threads 1
done
$S export classifier --checkpoint runs/cls/sev_fold{0,1,2,3,4}/final.pt --out runs/cls/sev_ens/severity.onnx
$S eval conditions --data "$MS/valid" --model runs/cls/sev_ens/severity.onnx --out $R/cls_sev_ens_microscope_valid.json
$S eval synth-conditions --data data/cls/heldout --model runs/cls/sev_ens/severity.onnx --out $R/cls_sev_ens_heldout.json
$S bench classifiers --models device/assets/default/severity.onnx,runs/cls/sev_ens/severity.onnx --threads 1,2 \
  --runs 20 --out $R/cls_sev_ens_latency.json

# 2d. The frozen-trunk grader (shipped in bundle 2026.12.07.0255, see docs/results/classifiers.md):
#    ImageNet Lite0 features at 512x384 cached once; presence heads per fold of the real originals
#    of train AND valid (5 folds), thresholds by the prevalence rule on their out-of-fold
#    probabilities; a level head on the synthetic levels; the frame alone (--no-mirror). The
#    choices (mirror, 384x288, colour cells, level-head inputs) were scored on train's frames out
#    of fold with rules fixed before the figures. valid is then scored held out by cross-fitting
#    (each half by graders trained without it; `other_view` in the report: the same heads on the
#    frame alone). INT8 is tried through the gate (exits non-zero when refused).
$S train grader --real "$MS/train" "$MS/valid" --synth data/cls/train --out runs/grader --threads 1
$S train grader --real "$MS/train" "$MS/valid" --synth data/cls/train --out runs/grader_384 --size 384x288 --threads 1
for v in "" _384; do
  .venv/bin/python benchmarks/condition_grader_crossfit.py --run runs/grader$v --real "$MS/train" "$MS/valid" \
    --synth data/cls/train --views --score "$MS/train" --out $R/condition_grader_views_train$v.json
done
.venv/bin/python benchmarks/condition_grader_crossfit.py --run runs/grader --real "$MS/train" "$MS/valid" \
  --synth data/cls/train --views --colour --score "$MS/train" --out $R/condition_grader_views_train_colour.json
.venv/bin/python benchmarks/condition_level_probe.py --run runs/grader --synth data/cls/train --out $R/condition_level_probe.json
.venv/bin/python benchmarks/condition_grader_crossfit.py --run runs/grader --real "$MS/train" "$MS/valid" \
  --score "$MS/valid" --synth data/cls/train --out $R/condition_grader_crossfit_valid.json --threads 1
mkdir -p runs/grader_single && ln -f runs/grader/features_512x384.npz runs/grader_single/  # the same features
$S train grader --real "$MS/train" "$MS/valid" --synth data/cls/train --out runs/grader_single --no-mirror --threads 1
$S export classifier --checkpoint runs/grader_single/final.pt --out runs/grader_single/severity.onnx \
  --int8 runs/grader_single/severity.int8.onnx --calib "$MS/train" data/cls/train --calib-n 128 || true
$S eval synth-conditions --data data/cls/heldout --model runs/grader_single/severity.onnx --out $R/condition_grader_heldout.json
$S bench classifiers --models runs/bundle_prev/severity.onnx,runs/grader_single/severity.onnx --threads 1,2 --runs 50 \
  --out $R/condition_grader_latency.json  # runs/bundle_prev: the previous bundle, unpacked
$S export classifier-card --dir runs/grader_release --kind severity --fp32 runs/grader_single/severity.onnx \
  --default-precision fp32 --command "bash benchmarks/make_classifiers.sh (step 2d)" \
  --metrics $R/condition_grader_crossfit_valid.json $R/condition_grader_heldout.json
# Then: bundle unpack device/assets/default, bundle build with runs/grader_release/conditions.card.json
# in place of the unpacked conditions card (docs/release-and-int8.md).

# 3. Alopecia grader on hair features measured by the shipped segmenter.
$S train alopecia --data data/cls/alo_train --heldout data/cls/heldout --limit 500 --out runs/cls/alopecia

# 4. Disease type: 5-fold CV over 3 shuffles with the paper's preprocessing and with a plain
#    resize, for the shipped single view (disease_lite0) and the 3x3 tiles; export.
for m in resize paper; do
  $S eval diseases --data "$DATA/scalp-disease-photos" --folds 5 --preprocess $m --out $R/disease_cv_$m.json --figures $R
  $S eval diseases --data "$DATA/scalp-disease-photos" --folds 5 --preprocess $m --model disease_lite0_tiles \
    --out $R/disease_cv_tiles_$m.json --figures $R
done
$S export disease --data "$DATA/scalp-disease-photos" --preprocess resize --out runs/cls/disease.onnx --int8 runs/cls/disease.int8.onnx

# 5. Cards for the bundle: one model card per classifier (its INT8 variant carries the
#    quantization record and gate verdict), packed with the segmenter (see
#    benchmarks/make_default_model.sh, EXTRA_CARDS). The shipped bundle leaves out the 13.5 MB
#    FP32 files of severity and disease (drop their fp32 variants from the cards before packing).
C="bash benchmarks/make_classifiers.sh"
$S export classifier-card --dir runs/cls_release --kind severity --fp32 runs/cls/sev_invfreq/severity.onnx \
  --int8 runs/cls/sev_invfreq/severity.int8.onnx --default-precision int8 --command "$C (step 2)" \
  --metrics $R/cls_sev_invfreq_severity_heldout.json $R/cls_sev_invfreq_severity.int8_heldout.json
$S export classifier-card --dir runs/cls_release --kind alopecia --fp32 runs/cls/alopecia/alopecia.onnx --command "$C (step 3)"
$S export classifier-card --dir runs/cls_release --kind disease --fp32 runs/cls/disease.onnx \
  --int8 runs/cls/disease.int8.onnx --default-precision int8 --command "$C (step 4)" --metrics $R/disease_cv_resize.json
# EXTRA_CARDS="runs/cls_release/conditions.card.json runs/cls_release/alopecia.card.json runs/cls_release/disease.card.json" \
#   bash benchmarks/make_default_model.sh   (its release steps)
