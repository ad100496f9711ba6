#!/usr/bin/env bash
# The pixel refiner (issue 15): M^ and M_AP fused at full resolution, trained on synthetic
# frames; its threshold chosen on a validation set; the fused mask scored on two hard sets
# never tuned on; the release packed into the default bundle. CPU: about 25 min on two cores.
# Data: `scalpedge synth` folders (seeds as in make_default_model.sh / make_refiner.sh).
set -euo pipefail
S=.venv/bin/scalpedge
[ -f data/train3_hard/truth.jsonl ] || $S synth --n 600 --seed 14 --out data/train3_hard --mode mixed --hard --workers 2
[ -f data/train3/truth.jsonl ] || $S synth --n 1000 --seed 11 --out data/train3 --mode mixed --workers 2
[ -f data/val3_hard/truth.jsonl ] || $S synth --n 150 --seed 15 --out data/val3_hard --mode mixed --hard --workers 2
[ -f data/heldout/truth.jsonl ] || $S synth --n 300 --seed 20261122 --out data/heldout --mode mixed --hard --workers 2
[ -f data/seed_new_hard/truth.jsonl ] || $S synth --n 150 --seed 20261204 --out data/seed_new_hard --mode mixed --hard --workers 2
# drawn after the refiner was trained and chosen, never looked at before its figures
[ -f data/seed_fresh_hard/truth.jsonl ] || $S synth --n 150 --seed 20261206 --out data/seed_fresh_hard --mode mixed --hard --workers 2
# train (resumable: the same command continues from runs/pixel_refiner_neg/last.pt); real frames'
# dandruff polygons as negatives. The shipped one ran at --threads 1 (7.7 min beside another run).
$S train pixel-refiner --data data/train3_hard,data/train3 --per-root 600 --steps 4000 \
  --negatives ../shared/data/scalp-microscope/train --out runs/pixel_refiner_neg --threads 1 --quiet
# threshold chosen on the validation set only, then the checked ONNX graph and its card
$S export pixel-refiner --checkpoint runs/pixel_refiner_neg/final.pt --tune data/val3_hard --out runs/pixel_refiner_neg_release
# the default bundle: the shipped cards plus this one, signed with the release key
rm -rf runs/bundle_cards runs/bundle_new
$S bundle unpack device/assets/default runs/bundle_cards
rm -f runs/bundle_cards/pixel_refiner.*  # the previous release's pixel refiner, if it had one
$S bundle build runs/bundle_new --version 2026.12.06.0402 --key "${RELEASE_KEY:-.release-keys/scalpedge-release-2026f.pem}" \
  --card runs/bundle_cards/*.card.json runs/pixel_refiner_neg_release/pixel_refiner.card.json
# scored with the bundle as shipped (copy runs/bundle_new to device/assets/default first)
for d in heldout seed_new_hard seed_fresh_hard val3_hard; do
  for stage in coarse paper fused; do
    $S eval seg --data data/$d --stage $stage --out benchmarks/reports/pixel_refiner_${d}_${stage}.json
  done
done
.venv/bin/python benchmarks/fused_real_frames.py --microscope ../shared/data/scalp-microscope/valid \
  --counts ../shared/data/follicle-counts/val --out benchmarks/reports/fused_real_frames.json \
  --figure benchmarks/reports/fused_real_frames.png
# Ablations of docs/results/refiner.md (same data and steps, out folders runs/pixel_refiner*):
# without the prompt refiner's map (--no-prompt-input), without the real negatives (no --negatives),
# and without either; each exported with --tune data/val3_hard and scored with
# `eval seg --stage fused --pixel-refiner <release>` and `fused_real_frames.py --bundle <bundle>`.
