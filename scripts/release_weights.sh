#!/usr/bin/env bash
# Regenerate sruc's release weights from the shared training images, with `sruc train`
# only (no side scripts), then copy them into src/sruc/zoo/weights/ and print the registry
# numbers (size, SHA-256) for src/sruc/zoo/released.py and release/manifest.json.
#
#   bash scripts/release_weights.sh [DATA] [RUNS]
#
# DATA: the training images (default ../shared/datasets/train: T91 + BSD200, the
#       papers' 291 images); 5% of them are held out for validation (seed 0) and
#       best.pt is chosen on that split, never on Set5/Set14.
# RUNS: where the run folders go (default runs/release, which git ignores). Each
#       run resumes if interrupted: run the script again with the same arguments.
#       docs/lab/ keeps the record (config.json, metrics.jsonl, val_psnr.png) of
#       the runs that made the shipped files (release/PROVENANCE.md says which);
#       their checkpoints are in git history.
# Extra options for every run (e.g. --max-minutes 60, --device cuda) go in
# SRUC_TRAIN_OPTS.
set -euo pipefail
data=${1:-../shared/datasets/train}
runs=${2:-runs/release}
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC2086
opts=${SRUC_TRAIN_OPTS:-}

# VDSR: one model for x2, x3 and x4 (and the scales in between).
sruc train "$data" --model vdsr --scale 2,3,4 --steps 16000 --batch-size 64 \
    --val-every 500 --log-every 100 --save-every-minutes 5 --seed 0 \
    --out "$runs/vdsr" $opts
# ... then a second cosine cycle from its best weights: a lower peak learning rate,
# a fresh patch order (seed 1), four times as long.
sruc train "$data" --model vdsr --scale 2,3,4 --steps 60000 --batch-size 64 --lr 3e-4 \
    --val-every 1000 --log-every 200 --save-every-minutes 5 --seed 1 \
    --init "$runs/vdsr/best.pt" --out "$runs/vdsr-2" $opts
# ... and a third from the second's best, on 64x64 patches (every output pixel of a
# 41x41 patch sees the zero padding of its 41-pixel receptive field), 32 per step.
# A moving average of the weights (--ema) from step 10,000 on. The
# script stops it at step 33,648 of 50,000, whose average (last.pt there) beat the
# run's best.pt (step 18,000 by the crops) on the whole validation images.
vdsr3() {
    sruc train "$data" --model vdsr --scale 2,3,4 --steps 50000 --batch-size 32 \
        --patch-size 64 --lr 1e-4 --val-every 1000 --log-every 200 --save-every-minutes 5 \
        --seed 2 --init "$runs/vdsr-2/best.pt" --out "$runs/vdsr-3" "$@" $opts
}
vdsr3 --stop-after 10000
vdsr3 --ema 0.999 --stop-after 33648
# ... then a fourth, short and in fp32, from that average (last.pt where the third
# stopped), validated on the whole validation images (--val-crop 0), and a fifth
# like it from the fourth's best.pt (step 1,650 of 2,200): the shipped file is the
# fifth's best.pt (step 2,000 of 4,000).
# vdsr_fp32 STEPS VAL_EVERY SEED FROM_CHECKPOINT TO
vdsr_fp32() {
    sruc train "$data" --model vdsr --scale 2,3,4 --steps "$1" --batch-size 32 --patch-size 64 \
        --lr 3e-5 --val-crop 0 --val-every "$2" --log-every 50 --save-every-minutes 5 --seed "$3" \
        --init "$4" --out "$runs/$5" --ema 0.999 --precision fp32 $opts
}
vdsr_fp32 2200 550 3 "$runs/vdsr-3/last.pt" vdsr-4
vdsr_fp32 4000 500 4 "$runs/vdsr-4/best.pt" vdsr-5

# SRCNN 9-5-5: one model per scale. x3 from scratch; x2 and x4 start from the x3
# weights (the features of a 3-layer network hardly depend on the scale, so this
# saves the first half of their training).
sruc train "$data" --model srcnn --scale 3 --steps 40000 --batch-size 128 \
    --val-every 1000 --log-every 250 --save-every-minutes 5 --seed 0 \
    --out "$runs/srcnn-x3" $opts
for s in 2 4; do
    sruc train "$data" --model srcnn --scale "$s" --steps 20000 --batch-size 128 \
        --val-every 1000 --log-every 250 --save-every-minutes 5 --seed 0 \
        --init "$runs/srcnn-x3/best.pt" --out "$runs/srcnn-x$s" $opts
done
# x3 then gets a second cosine cycle from its own weights (fresh patch order, seed 1).
sruc train "$data" --model srcnn --scale 3 --steps 20000 --batch-size 128 \
    --val-every 1000 --log-every 250 --save-every-minutes 5 --seed 1 \
    --init "$runs/srcnn-x3/best.pt" --out "$runs/srcnn-x3b" $opts

# Later SRCNN cycles train on 48x48 patches (batch 60 keeps the pixels per step of
# 128 33x33 patches), each from an earlier run's best:
# srcnn48 SCALE STEPS LR SEED FROM TO [more sruc train options]
srcnn48() {
    sruc train "$data" --model srcnn --scale "$1" --steps "$2" --batch-size 60 --patch-size 48 \
        --lr "$3" --val-every 1000 --log-every 250 --save-every-minutes 5 --seed "$4" \
        --init "$runs/$5/best.pt" --out "$runs/$6" "${@:7}" $opts
}
# x3's third cycle (lr scaled by sqrt(60/128)): a 6,000-step trial from the same start
# gave +0.009 dB validation over 33x33 patches, and 20% more pixels per second. A
# fourth the same way, then a fifth at half the peak learning rate (less of the
# restart dip).
srcnn48 3 45000 2e-4 2 srcnn-x3b srcnn-x3c
srcnn48 3 40000 2e-4 3 srcnn-x3c srcnn-x3d
srcnn48 3 35000 1e-4 4 srcnn-x3d srcnn-x3e
# x4 gets a second cycle too, longer and with a lower peak learning rate (3e-4: less
# of the restart dip), then a third and a fourth on 48x48 patches like x3's.
sruc train "$data" --model srcnn --scale 4 --steps 40000 --batch-size 128 --lr 3e-4 \
    --val-every 1000 --log-every 250 --save-every-minutes 5 --seed 1 \
    --init "$runs/srcnn-x4/best.pt" --out "$runs/srcnn-x4b" $opts
srcnn48 4 40000 2e-4 2 srcnn-x4b srcnn-x4c
srcnn48 4 40000 2e-4 3 srcnn-x4c srcnn-x4d
# A fifth keeps a moving average of the weights: it beat x4d on the whole
# validation images (28.965 vs 28.953 dB).
srcnn48 4 40000 2e-4 5 srcnn-x4d srcnn-x4f --ema 0.999
# A sixth, short and in fp32: the same run in bf16 ended 0.007 dB lower on the whole
# validation images. The shipped file is its average at the end (last.pt).
srcnn48 4 6000 5e-5 8 srcnn-x4f srcnn-x4h --ema 0.999 --precision fp32

# Publish: the chosen checkpoint of each run, under its registry file name.
copy() {
    install -m 0644 "$1" "$here/src/sruc/zoo/weights/$2"
    printf '%-14s size=%-9s sha256=%s\n' "$2" "$(stat -c %s "$1")" \
        "$(sha256sum "$1" | cut -d' ' -f1)"
}
copy "$runs/vdsr-5/best.pt" vdsr.pt
copy "$runs/srcnn-x2/best.pt" srcnn-x2.pt
copy "$runs/srcnn-x3e/best.pt" srcnn-x3.pt
copy "$runs/srcnn-x4h/last.pt" srcnn-x4.pt
