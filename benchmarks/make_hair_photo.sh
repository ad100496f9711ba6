#!/usr/bin/env bash
# The hair-photo segmenter (issue 17): three networks, one budget, on Figaro-1k; the winner is
# exported (FP32 + INT8 gated on validation mIoU) for the bundle as `hair_photo`.
#   bash benchmarks/make_hair_photo.sh        (FIGARO=../shared/data/figaro1k/training by default)
# Each run: 1000 steps of 8 random 192 px crops of photos held at 256 px, AdamW, cosine LR, seed 0,
# validation on the photos `server_train.hair_photo.split` holds out (15 %, by sha256 of the stem).
set -euo pipefail
S=".venv/bin/scalpedge"
FIGARO=${FIGARO:-../shared/data/figaro1k/training}
THREADS=${THREADS:-1}
R=benchmarks/reports/hair_photo
mkdir -p runs/hp "$R"
# 1. Our diffusion model of the photos (images only; the same code as the scalp model): 3000 steps,
#    64 px crops of photos resized to 128, U-Net base 32 (2.2 M parameters).
$S train diffusion --data "$FIGARO/images" --out runs/diffusion_figaro --config cpu --load 128 --size 64 \
  --steps 3000 --threads "$THREADS" --save-every 250
# 2. The three networks, the same loop and budget.
$S train hair-photo --data "$FIGARO" --out runs/hp/lite0_unet --model lite0_unet --steps 1000 --lr 1e-3 --threads "$THREADS"
$S train hair-photo --data "$FIGARO" --out runs/hp/scratch_unet --model scratch_unet --steps 1000 --lr 1e-3 --threads "$THREADS"
$S train hair-photo --data "$FIGARO" --out runs/hp/diffusion_features --model diffusion_features \
  --diffusion runs/diffusion_figaro/final.pt --t 50 --feature-side 128 --steps 1000 --lr 1e-3 --threads "$THREADS"
# 3. Each exported and scored on the validation photos at their own size (the table).
for m in lite0_unet scratch_unet diffusion_features; do
  $S export hair-photo --checkpoint "runs/hp/$m/final.pt" --out "runs/hp/$m/export"
  $S eval seg --data "$FIGARO" --split val --model "runs/hp/$m/export/hair_photo.onnx" --out "$R/${m}_val.json"
done
# 4. The winner (lite0_unet in the 2026-12-04 runs) with its INT8 file and card, for `bundle build`.
$S export hair-photo --checkpoint runs/hp/lite0_unet/final.pt --out runs/hp/release --int8 "$FIGARO" \
  --metrics "$R/lite0_unet_val.json" "$R/scratch_unet_val.json" "$R/diffusion_features_val.json"
$S eval seg --data "$FIGARO" --split val --model runs/hp/release/hair_photo.int8.onnx --out "$R/lite0_unet_int8_val.json"
# Then: bundle unpack device/assets/default, bundle build with runs/hp/release/hair_photo.card.json added
# (see make_counting_model.sh for the build/copy/verify).
