"""Issue 23, item 3: what holds the Adam-trained VDSR back? One change at a time.

Each probe trains a small VDSR (20 layers of 32 channels) from scratch with the
default ``adam`` recipe (lr 1e-3, cosine to 0, the identity start, per-pixel
MSE, 41x41 patches, batch 64, x2/x3/x4 mixed, the 291 images less the 15 held
out) and changes one ingredient, at an equal budget of pixels seen. Each is
validated on the whole held-out images (never on Set5/Set14); the score is the
mean Y-PSNR over x2/x3/x4 of the last validation.

    OMP_NUM_THREADS=1 nohup python scripts/vdsr_probes.py [DATA] [RUNS] &

Runs go to RUNS (default runs/probes, which git ignores), one folder each, and
resume where they stopped when the script is started again; the table of
results is RUNS/probes.json, rewritten after every probe. Order: the controls
first (two seeds, for the noise), then the candidates.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sruc.train import RECIPES, TrainConfig, train

STEPS = 1000
BATCH = 64
PATCH = 41
DATA = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/train"
RUNS = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/probes")

# The paper's initialisation of the last layer instead of starting at the identity.
RECIPES["adam-he"] = dataclasses.replace(
    RECIPES["adam"], name="adam-he", identity_start=False, summary="adam, He-initialised last layer"
)


def base(name: str, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        data=DATA,
        out=str(RUNS / name),
        model="vdsr",
        model_config={"width": 32},
        scales=(2, 3, 4),
        steps=STEPS,
        batch_size=BATCH,
        patch_size=PATCH,
        val_crop=0,
        val_every=STEPS // 2,
        log_every=50,
        seed=0,
        save_every_minutes=5.0,
        clip=1e9,  # a no-op that makes the loop log the gradient norm
    )
    return dataclasses.replace(cfg, **changes)


def score(name: str) -> dict[str, Any] | None:
    path = RUNS / name / "metrics.jsonl"
    if not path.exists():
        return None
    vals = [json.loads(line) for line in path.read_text().splitlines() if '"val"' in line]
    vals = [v for v in vals if v.get("kind") == "val"]
    if not vals:
        return None
    last = vals[-1]
    return {"step": last["step"], "psnr": last["psnr"], "mean": last["psnr_mean"]}


def median_grad_norm(name: str) -> float:
    path = RUNS / name / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    norms = [r["grad_norm"] for r in rows if r.get("kind") == "train" and "grad_norm" in r]
    return statistics.median(norms[len(norms) // 2 :])


def run(name: str, cfg: TrainConfig, results: dict[str, Any], note: str) -> None:
    started = time.monotonic()
    train(cfg)
    result = score(name) or {}
    result.update(note=note, minutes=round((time.monotonic() - started) / 60, 1))
    results[name] = result
    (RUNS / "probes.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    RUNS.mkdir(parents=True, exist_ok=True)
    table = RUNS / "probes.json"
    results: dict[str, Any] = json.loads(table.read_text()) if table.exists() else {}
    pixels = BATCH * PATCH * PATCH
    probes: list[tuple[str, dict[str, Any], str]] = [
        ("control", {}, "adam defaults"),
        ("control-seed1", {"seed": 1}, "the control with another seed: the noise"),
        ("l1", {"loss": "l1"}, "L1 loss (EDSR)"),
        ("patch96", {"patch_size": 96, "batch_size": round(pixels / 96**2)}, "96x96 patches"),
        (
            "batch256",
            {"batch_size": 4 * BATCH, "steps": STEPS // 4, "val_every": STEPS // 8},
            "batch 256, a quarter of the steps",
        ),
        ("he-start", {"recipe": "adam-he"}, "He-initialised last layer, not the identity"),
        ("ema", {"ema": 0.99}, "moving average of the weights, decay 0.99"),
    ]
    for name, changes, note in probes:
        if name in results:
            continue
        run(name, base(name, **changes), results, note)
    if "clip" not in results:
        norm = median_grad_norm("control")
        run("clip", base("clip", clip=norm), results, f"gradient norm clipped to {norm:.4g}")
    if "restarts" not in results:
        # Two cosine cycles of half the steps each, the second from the first's best
        # at a third of the peak lr, as the shipped VDSR was trained.
        half = STEPS // 2
        train(base("restarts-a", steps=half, val_every=half))
        run(
            "restarts",
            base(
                "restarts",
                steps=half,
                val_every=half,
                lr=3e-4,
                init=str(RUNS / "restarts-a" / "best.pt"),
                seed=1,
            ),
            results,
            "two cosine cycles of half the steps (lr 1e-3, then 3e-4)",
        )


if __name__ == "__main__":
    main()
