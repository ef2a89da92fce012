#!/usr/bin/env bash
# Train release weights (VDSR by default) on a lent GPU machine (the workplace's
# `device` tool), whose calls run at most 10 minutes each and take at most 64 MiB
# of files; release/GPU.md gives the whole procedure.
#
#   bash scripts/device_release.sh pack [DATA]   # here, once: fills .devpack/
#   bash scripts/device_release.sh train         # there, once per call
#
# pack: the training images (default ../shared/datasets/train) as lossless WebP
#   (62 MB of PNG become 41), already split into .devpack/train and the 15 images
#   `sruc train` holds out for validation, .devpack/val, so that the GPU run
#   validates on exactly the images the CPU runs did; every file is checked to
#   decode to the same pixels. Also the platformdirs wheel, which the GPU
#   machine's Python lacks.
# train: resumes the run in .devpack/run (or RUN_FROM) if there is one, else times a few
#   steps and sizes a new run to TOTAL_MINUTES of training; trains for MINUTES;
#   leaves the run's files in $OUT. Copy them back into .devpack/run here before
#   the next call.
#
# Settings for train (environment), with their defaults:
#   MINUTES=8          training time of this call (the call's limit is 10 minutes)
#   TOTAL_MINUTES=20   training time of the whole run, spread over the calls
#   BATCH=128 PATCH=64 LR=2e-4 SEED=5 PRECISION=bf16 INIT=src/sruc/zoo/weights/vdsr.pt
#   ARCH=vdsr SCALES=2,3,4   (SRCNN x4: ARCH=srcnn SCALES=4 INIT=src/sruc/zoo/weights/srcnn-x4.pt)
#   EXTRA=""           more `sruc train` options (e.g. --model-config for a test)
#   DEVICE=cuda
#   RUN_FROM=.devpack/run   the run to resume (e.g. a committed docs/lab/vdsr-6)
set -euo pipefail
pack=.devpack

case ${1:-} in
pack)
    data=${2:-../shared/datasets/train}
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.devpack/' "$exclude" 2>/dev/null || echo '/.devpack/' >>"$exclude"
    rm -rf "$pack/train" "$pack/val" "$pack/whl"
    python3 - "$data" "$pack" <<'EOF'
import io
import sys
from pathlib import Path

from PIL import Image

from sruc.train.data import load_images, split_validation

data, pack = Path(sys.argv[1]), Path(sys.argv[2])
train, val = split_validation(load_images(data), 0.05)
for part, images in (("train", train), ("val", val)):
    for name in images.names:
        src = data / name
        # The validation images lie flat, as `sruc bench` wants them.
        dst = (pack / part / (name if part == "train" else Path(name).name)).with_suffix(".webp")
        if dst.exists():
            sys.exit(f"{dst}: two images of that name; not packed")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im.load()
            buf = io.BytesIO()
            im.save(buf, "WEBP", lossless=True, quality=100, method=4)
            with Image.open(io.BytesIO(buf.getvalue())) as back:
                if back.convert(im.mode).tobytes() != im.tobytes():
                    sys.exit(f"{src}: WebP did not keep the pixels; not packed")
        dst.write_bytes(buf.getvalue())
print(
    f"packed {len(train)} training and {len(val)} validation images "
    f"(Pillow {Image.__version__}; a run resumes only on data packed by the same)",
    file=sys.stderr,
)
EOF
    ver=$(python3 -c 'import importlib.metadata as m; print(m.version("platformdirs"))')
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp -d "$pack/whl" "platformdirs==$ver"
    # What a call sends: the tracked files, .devpack and (later) the run it resumes.
    tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
    have=$(du -sb "$pack" | cut -f1)
    echo "a call sends $(((tree + have) / 1048576)) MiB of 64 (tree $((tree / 1048576)), .devpack $((have / 1048576)))" >&2
    ;;
train)
    : "${OUT:?train runs on the device machine, where OUT is set}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$pack"/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    run=runs/device
    rm -rf "$run" && mkdir -p runs
    from=${RUN_FROM:-$pack/run}
    if [ -d "$from" ]; then cp -r "$from" "$run"; fi
    init=${INIT-src/sruc/zoo/weights/vdsr.pt}
    # shellcheck disable=SC2206
    common=(--model "${ARCH:-vdsr}" --scale "${SCALES:-2,3,4}" --batch-size "${BATCH:-128}" --patch-size "${PATCH:-64}"
        --lr "${LR:-2e-4}" --seed "${SEED:-5}" --precision "${PRECISION:-bf16}" --ema 0.999
        --val .devpack/val --val-crop 0 --device "${DEVICE:-cuda}" ${init:+--init "$init"} ${EXTRA:-})
    if [ -f "$run/state.pt" ]; then
        read -r steps val_every < <(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))["run"]
print(r["steps"], r["val_every"])' "$run/config.json")
    else
        # Time 150 steps: the rate of the last 50 (the first ones warm the GPU up).
        rm -rf /tmp/probe
        python3 -m sruc train .devpack/train "${common[@]}" --steps 1000000 --stop-after 150 \
            --val-every 1000000 --log-every 50 --out /tmp/probe -q
        rate=$(python3 -c 'import json,sys; print([r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"][-1]["patches_per_s"])' \
            /tmp/probe/metrics.jsonl)
        steps=$(python3 -c "print(int($rate * ${TOTAL_MINUTES:-20} * 60 * 0.95 / ${BATCH:-128}))")
        val_every=$(((steps + 19) / 20))
        echo "probe: $rate patches/s; the run is $steps steps" >&2
    fi
    rc=0
    python3 -m sruc train .devpack/train "${common[@]}" --steps "$steps" --val-every "$val_every" \
        --log-every 200 --save-every-minutes 2 --max-minutes "${MINUTES:-8}" --out "$run" || rc=$?
    # What the call did, even if training failed part-way (the state saved last).
    for f in config.json metrics.jsonl state.pt best.pt last.pt val_psnr.png; do
        if [ -f "$run/$f" ]; then cp "$run/$f" "$OUT"/; fi
    done
    tail -n 3 "$run/metrics.jsonl" 2>/dev/null || true
    exit "$rc"
    ;;
*)
    echo "usage: bash scripts/device_release.sh pack [DATA] | train" >&2
    exit 2
    ;;
esac
