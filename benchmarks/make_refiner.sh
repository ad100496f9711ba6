#!/usr/bin/env bash
# The prompt refiner (issue 3): train, export, choose the M_AP threshold on the synthetic
# validation set, ablation on the hard held-out set and on FDU counts, per-stage speed.
# Data: `scalpedge synth` folders data/train3, data/train3_hard, data/val3, data/heldout (see
# make_default_model.sh) and /work/shared/data/follicle-counts/val. Training: 39 min on one
# Xeon core (2026-11-22), 13 min on two EPYC cores (2026-11-29, --threads 2).
set -euo pipefail
S=.venv/bin/scalpedge
$S train refiner --data data/train3,data/train3_hard --per-root 1000 --steps 7000 \
  --cache runs/refiner_cache --out runs/refiner --threads 2 --quiet
$S export refiner --checkpoint runs/refiner/final.pt --out runs/refiner_release
# Thresholds of M_AP (decoder P(hair)) and of M^ in the AND, chosen on validation sets only:
# the hard one (like the held-out set) decides; then set REFINER_MASK_THRESHOLD and
# FUSION_COARSE_THRESHOLD in device/contracts/constants.py from report["tuning"]["best"].
[ -f data/val3_hard/truth.jsonl ] || $S synth --n 150 --seed 15 --out data/val3_hard --mode mixed --hard --workers 2
for v in val3 val3_hard; do
  $S eval refiner --refiner runs/refiner_release --tune data/$v --out benchmarks/reports/refiner_threshold_$v.json
done
$S eval refiner --refiner runs/refiner_release --synthetic data/heldout \
  --counts /work/shared/data/follicle-counts/val \
  --out benchmarks/reports/refiner_ablation.json --figure benchmarks/reports/refiner_figure3.png \
  --figure-counts runs/refiner_figure3_fdu.png
$S bench refiner --frames data/heldout/images --refiner runs/refiner_release --checkpoint runs/refiner/final.pt \
  --threads 1,2 --runs 20 --out benchmarks/reports/refiner_speed.json
$S export refiner --checkpoint runs/refiner/final.pt --out runs/refiner_release \
  --metrics benchmarks/reports/refiner_ablation.json benchmarks/reports/refiner_speed.json
