#!/usr/bin/env bash
# Table 3 analogue (issue 16): the condition grader trained with no augmentation, Gaussian noise,
# AugMix, unmasked translation and masked translation (DiffuseIT-M, ours), the same budget for
# each: N added frames (drawn toward rare levels: inverse_targets / rarity_sources), the same
# grader, steps, batch, seed and real frames. Scores: per-level F1 (severe included) on the
# synthetic held-out set, presence macro-F1 on scalp-microscope/valid.
#   bash benchmarks/table3.sh            (after `scalpedge train diffusion ... --out runs/diffusion`)
# Env: MS (scalp-microscope folder), N (added frames, 400), STEPS (grader steps, 300), THREADS (1),
# SEED (grader seed, 0; seed S > 0 reports to benchmarks/reports/table3/seedS, the same added sets).
# Seeds may run side by side once the sets exist (a first run makes them). A method whose
# reports exist is skipped (resume); delete them to rerun it.
# Gather: python benchmarks/table3.py benchmarks/reports/table3 [benchmarks/reports/table3/seed1 ...] --out T.json
set -euo pipefail
S=".venv/bin/scalpedge"
MS=${MS:-../shared/data/scalp-microscope}
N=${N:-400}
STEPS=${STEPS:-300}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
SRC=data/cls/train                 # scalpedge synth --conditions aihub --n 2400 --seed 100 --out data/cls/train
HELD=data/cls/heldout              # scalpedge synth --conditions aihub --n 800 --seed 200 --out data/cls/heldout
W=runs/table3
R=benchmarks/reports/table3
[ "$SEED" = 0 ] || R="$R/seed$SEED"
mkdir -p "$W/sets" "$R"
TR=(--model runs/diffusion/final.pt --features runs/cls/sev_fold0/final.pt --refs "$SRC" --seed 1 --threads "$THREADS")
for m in noise augmix; do
  [ -f "$W/sets/$m/config.json" ] || $S augment --data "$SRC" --out "$W/sets/$m" --perturb "$m" --n "$N" --seed 1
done
[ -f "$W/sets/masked/config.json" ] || $S augment --data "$SRC" --out "$W/sets/masked" --n "$N" "${TR[@]}"
[ -f "$W/sets/unmasked/config.json" ] || $S augment --data "$SRC" --out "$W/sets/unmasked" --n "$N" --unmasked "${TR[@]}"
for m in none noise augmix unmasked masked; do
  set_dir="$W/sets/$m"
  [ "$m" = none ] && set_dir="$SRC"
  run="$W/$m-s$SEED"
  [ -f "$R/${m}_valid.json" ] && continue
  $S train classifier --synth "$set_dir" --real "$MS/train" --out "$run" --steps "$STEPS" --eval-every 100 \
    --seed "$SEED" --threads "$THREADS"
  $S export classifier --checkpoint "$run/final.pt" --out "$run/severity.onnx"
  $S eval synth-conditions --data "$HELD" --model "$run/severity.onnx" --out "$R/${m}_heldout.json"
  $S eval conditions --data "$MS/valid" --model "$run/severity.onnx" --out "$R/${m}_valid.json"
done
.venv/bin/python benchmarks/table3.py "$R" --out "$R/table3.json"
