#!/usr/bin/env bash
# Table 3 analogue (issue 16): the condition grader trained with no augmentation, Gaussian noise,
# AugMix, unmasked translation and masked translation (DiffuseIT-M, ours), the same budget for
# each: N added frames (drawn toward rare levels: inverse_targets / rarity_sources), the same
# grader, steps, batch, seed and real frames. Scores: per-level F1 (severe included) on the
# synthetic held-out set, presence macro-F1 on scalp-microscope/valid.
#   bash benchmarks/table3.sh            (after `scalpedge train diffusion ... --out runs/diffusion`)
# Env: MS (scalp-microscope folder), N (added frames, 400), STEPS (grader steps, 300), THREADS (1),
# SEED (grader seed, 0; seed S > 0 reports to $REPORTS/seedS, the same added sets), METHODS (a
# subset, in the order given; default the five of the paper's table and then the gathered table;
# masked_severe: masked translation of one condition per frame to severe, --balance severe;
# masked_accepted / unmasked_accepted: the same, keeping only draws the grader ACCEPT (default
# runs/cls/sev_fold0/severity.onnx) grades severe in one of TRIES (1) tries: augment --accept
# --redraw), TRANSLATE (extra translation flags, e.g. "--strength 0.8 --guidance 6"), DIFFUSION (the
# checkpoint, runs/diffusion/final.pt), RESOLUTION (side the frames are drawn at; default the crop size), WORK (added sets, feature caches and graders, runs/table3),
# REPORTS (benchmarks/reports/table3).
# The seeds of one method share its feature cache ($WORK/cache_METHOD): run them one after another.
# Methods may run side by side (METHODS="none noise" in one shell, "augmix masked" in another). A
# method whose reports exist is skipped (resume); delete them to rerun it.
# Gather: python benchmarks/table3.py $REPORTS [$REPORTS/seed1 ...] --out T.json
set -euo pipefail
S=".venv/bin/scalpedge"
MS=${MS:-../shared/data/scalp-microscope}
N=${N:-400}
STEPS=${STEPS:-300}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
SRC=data/cls/train                 # scalpedge synth --conditions aihub --n 2400 --seed 100 --out data/cls/train
HELD=data/cls/heldout              # scalpedge synth --conditions aihub --n 800 --seed 200 --out data/cls/heldout
W=${WORK:-runs/table3}
R=${REPORTS:-benchmarks/reports/table3}
[ "$SEED" = 0 ] || R="$R/seed$SEED"
mkdir -p "$W/sets" "$R"
# shellcheck disable=SC2206  # TRANSLATE: extra translation flags, split on spaces
TR=(--model "${DIFFUSION:-runs/diffusion/final.pt}" --features runs/cls/sev_fold0/final.pt --refs "$SRC" --seed 1 --threads "$THREADS" ${RESOLUTION:+--resolution "$RESOLUTION"} ${TRANSLATE:-})
for m in ${METHODS:-none noise augmix unmasked masked}; do
  set_dir="$W/sets/$m"
  case $m in
    none) set_dir="$SRC" ;;
    noise|augmix) [ -f "$set_dir/config.json" ] || $S augment --data "$SRC" --out "$set_dir" --perturb "$m" --n "$N" --seed 1 ;;
    masked|unmasked|masked_severe|masked_accepted|unmasked_accepted)
      how=()
      [[ "$m" = unmasked* ]] && how=(--unmasked)
      [[ "$m" = *_severe || "$m" = *_accepted ]] && how+=(--balance severe)
      [[ "$m" = *_accepted ]] && how+=(--accept "${ACCEPT:-runs/cls/sev_fold0/severity.onnx}" --tries "${TRIES:-1}" --redraw)
      [ -f "$set_dir/config.json" ] || $S augment --data "$SRC" --out "$set_dir" --n "$N" "${how[@]}" "${TR[@]}" ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
  run="$W/$m-s$SEED"
  [ -f "$R/${m}_valid.json" ] && continue
  # the frozen prefix's features depend on the set only: seeds of one method share them (run seeds
  # of one method one after another, not side by side)
  $S train classifier --synth "$set_dir" --real "$MS/train" --out "$run" --cache "$W/cache_$m" --steps "$STEPS" \
    --eval-every 100 --seed "$SEED" --threads "$THREADS"
  $S export classifier --checkpoint "$run/final.pt" --out "$run/severity.onnx"
  $S eval synth-conditions --data "$HELD" --model "$run/severity.onnx" --out "$R/${m}_heldout.json"
  $S eval conditions --data "$MS/valid" --model "$run/severity.onnx" --out "$R/${m}_valid.json"
done
[ -n "${METHODS:-}" ] || .venv/bin/python benchmarks/table3.py "$R" --out "$R/table3.json"
