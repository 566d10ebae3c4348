"""Does a change to the image pipeline change its output? prepare_image on the 10,000 official
test digits (as PNG files, dark ink on white, 28x28) and on the 1,300 files of realworld.py
(100 a group), saved by one version of the code and compared by another.

    git stash; python benchmarks/prepare_identity.py --save /tmp/before.npz; git stash pop
    python benchmarks/prepare_identity.py --compare /tmp/before.npz
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from realworld import make_images

from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import InputError
from mnist_edge.edge.images import prepare_image


def files(root: Path) -> list[Path]:
    digits = root / "digits"
    digits.mkdir()
    for i, d in enumerate(load_split("test").images):
        Image.fromarray(255 - d).save(digits / f"{i:05d}.png")
    make_images(root / "rw", 100, 80)
    return sorted(digits.glob("*.png")) + sorted(p for p in (root / "rw").rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--save")
    g.add_argument("--compare")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = files(Path(tmp))
        t0 = time.perf_counter()
        out = []
        for path in paths:
            try:
                out.append(prepare_image(path))
            except InputError:
                out.append(np.full((28, 28), 7, np.uint8))  # a refusal, marked
        ms = (time.perf_counter() - t0) / len(paths) * 1e3
        names = [str(path.relative_to(tmp)) for path in paths]
    x = np.stack(out)
    print(f"{len(paths)} files, {ms:.2f} ms each")
    if a.save:
        np.savez_compressed(a.save, names=np.array(names), x=x)
        return
    before = np.load(a.compare)
    assert list(before["names"]) == names, "another set of files"
    same = (before["x"] == x).all(axis=(1, 2))
    print(f"identical 28x28 inputs: {int(same.sum())} of {len(same)}")
    for name in np.array(names)[~same][:10]:
        print("differs:", name)


if __name__ == "__main__":
    main()
