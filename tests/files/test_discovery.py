"""sruc.files.discovery: one rule for what batch, bench and train take as images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from helpers import smooth_rgb
from sruc.batch.run import plan_batch
from sruc.files import discovery
from sruc.measure.bench import find_images
from sruc.train.data import load_images


def test_batch_bench_and_train_agree_on_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("a.png", "B.JPG", "c.gif", "sub/d.webp", ".hidden/e.png", ".f.png"):
        Image.fromarray(smooth_rgb(40, 40)).convert("RGB").save(root / name)
    (root / "clip.mp4").write_bytes(b"\x00" * 64)
    (root / "notes.txt").write_text("not an image")
    walked = [p.relative_to(root).as_posix() for p in discovery.walk(root)]
    assert walked == ["B.JPG", "a.png", "c.gif", "clip.mp4", "notes.txt", "sub/d.webp"]
    assert [p.name for p in find_images(root)] == ["B.JPG", "a.png", "c.gif"]  # top level
    trained = load_images(root)
    assert trained.names == ["B.JPG", "a.png", "c.gif", "sub/d.webp"]
    assert dict(trained.skipped) == {
        "clip.mp4": "is not an image (a .mp4 file)",
        "notes.txt": "is not an image (a .txt file)",
    }
    plan = plan_batch([root], tmp_path / "out", 2, recursive=True)
    names = sorted(item.source.relative_to(root).as_posix() for item in plan)
    assert names == ["B.JPG", "a.png", "c.gif", "sub/d.webp"]
