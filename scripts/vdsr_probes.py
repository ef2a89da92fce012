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
results is RUNS/probes.json, rewritten after every probe. Order: the control,
the two changes against dying ReLUs (no biases, a lower peak lr), a fine-tune of
the control with and without --revive, the control with a second seed (the
noise), then the other candidates.
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


def dead_units(checkpoint_path: Path, images: list[torch.Tensor]) -> dict[str, int]:
    """ReLU channels never (``dead``) or almost never (``rare``: < 1% of pixels)
    positive on ``images`` (network inputs), over all hidden layers."""
    from sruc.zoo import checkpoint

    net = checkpoint.load(checkpoint_path).build().eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][:-1]
    peak: list[torch.Tensor | None] = [None] * len(convs)
    share: list[torch.Tensor | None] = [None] * len(convs)

    def hook(i: int) -> Any:
        def keep(_m: Any, _inp: Any, out: torch.Tensor) -> None:
            a = torch.relu(out)
            top, on = a.amax(dim=(0, 2, 3)), (a > 0).float().mean(dim=(0, 2, 3))
            old, seen = peak[i], share[i]
            peak[i] = top if old is None else torch.maximum(old, top)
            share[i] = on if seen is None else seen + on

        return keep

    handles = [c.register_forward_hook(hook(i)) for i, c in enumerate(convs)]
    with torch.no_grad():
        for x in images:
            net(x)
    for h in handles:
        h.remove()
    dead = sum(int((p <= 0).sum()) for p in peak if p is not None)
    rare = sum(int((s / len(images) < 0.01).sum()) for s in share if s is not None)
    return {"dead": dead, "rare": rare, "units": sum(c.out_channels for c in convs)}


def probe_inputs(count: int = 6) -> list[torch.Tensor]:
    """Network inputs (x2/x3/x4 bicubic of the 8-bit LR) of a few training images."""
    from sruc.core.protocol import degrade, interpolate, luma, modcrop
    from sruc.files.images import read_image
    from sruc.train.data import list_files

    found = []
    for path in list_files(Path(DATA))[:count]:
        hr_all = luma(read_image(path).color * 255)
        for s in (2, 3, 4):
            hr = modcrop(hr_all, s)
            found.append((interpolate(degrade(hr, s), tuple(hr.shape[-2:])) / 255).float()[None])
    return found


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
    result.update(dead_units(RUNS / name / "last.pt", probe_inputs()))
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
        ("bias-free", {"model_config": {"width": 32, "bias": False}}, "no biases (as the port)"),
        ("lr3e-4", {"lr": 3e-4}, "peak lr 3e-4 instead of 1e-3"),
        (
            "finetune",
            {
                "init": str(RUNS / "control" / "last.pt"),
                "steps": STEPS * 2 // 5,
                "lr": 3e-4,
                "val_every": STEPS // 5,
            },
            "the control's weights, 400 more steps at peak lr 3e-4",
        ),
        (
            "finetune-revive",
            {
                "init": str(RUNS / "control" / "last.pt"),
                "steps": STEPS * 2 // 5,
                "lr": 3e-4,
                "revive": 0.01,
                "val_every": STEPS // 5,
            },
            "the same with the channels active on < 1% of the pixels revived first",
        ),
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
