#!/usr/bin/env bash
# The prompt refiner (issue 3): train, export, choose the M_AP threshold on the synthetic
# validation set, ablation on the hard held-out set and on FDU counts, per-stage speed.
# Data: `scalpedge synth` folders data/train3, data/train3_hard, data/val3, data/heldout (see
# make_default_model.sh) and /work/shared/data/follicle-counts/val. About 40 min of one core.
set -euo pipefail
S=.venv/bin/scalpedge
$S train refiner --data data/train3,data/train3_hard --per-root 1000 --steps 7000 \
  --cache runs/refiner_cache --out runs/refiner --quiet
$S export refiner --checkpoint runs/refiner/final.pt --out runs/refiner_release
# Threshold of M_AP on the decoder's P(hair), chosen on val3 only (then set
# REFINER_MASK_THRESHOLD in device/constants.py to report["tuning"]["best"]["threshold"]).
$S eval refiner --refiner runs/refiner_release --tune data/val3 \
  --out benchmarks/reports/refiner_threshold_val3.json
$S eval refiner --refiner runs/refiner_release --synthetic data/heldout \
  --counts /work/shared/data/follicle-counts/val \
  --out benchmarks/reports/refiner_ablation.json --figure benchmarks/reports/refiner_figure3.png \
  --figure-counts runs/refiner_figure3_fdu.png
$S bench refiner --refiner runs/refiner_release --checkpoint runs/refiner/final.pt \
  --threads 1,2 --runs 20 --out benchmarks/reports/refiner_speed.json
$S export refiner --checkpoint runs/refiner/final.pt --out runs/refiner_release \
  --metrics benchmarks/reports/refiner_ablation.json benchmarks/reports/refiner_speed.json
