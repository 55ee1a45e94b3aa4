"""FER2013 cache build and re-open times on a full-size synthetic fer2013.csv.

Writes a fer2013.csv with the real file's shape (35,887 rows: 28,709 Training, 3,589
PublicTest, 3,589 PrivateTest; 2304 pixel values per row) under /tmp (once), then measures:

* parse: ``read_fer2013`` alone (bulk parse of the CSV into arrays);
* build: ``FER2013DataModule.setup()`` with an empty cache dir (parse + atomic cache write);
* reopen: ``setup()`` of a new DataModule on the existing cache (manifest check + mmap).

Usage: ``python experiments/data_loader_bench/fer2013_parse.py [--repeats 3] [--dir /tmp/x]``
Timings on a shared machine are noisy: the script prints every repeat and the minimum.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fersuite.data.errors import BadSamples
from fersuite.data.fer2013 import FER2013DataModule, read_fer2013

ROWS = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}


def write_full_size_csv(path: Path, seed: int = 0) -> None:
    """A fer2013.csv of the real size: random labels and pixels, usages in the real order."""
    rng = np.random.default_rng(seed)
    # Every value 0..255 as its text plus a trailing space, padded to 4 bytes.
    table = np.zeros((256, 4), dtype=np.uint8)
    for v in range(256):
        s = f"{v} ".encode()
        table[v, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"emotion,pixels,Usage\n")
        for usage, n in ROWS.items():
            for start in range(0, n, 4096):
                k = min(4096, n - start)
                pixels = rng.integers(0, 256, size=(k, 2304), dtype=np.uint8)
                labels = rng.integers(0, 7, size=k)
                chars = table[pixels]  # (k, 2304, 4)
                for i in range(k):
                    row = chars[i][chars[i] != 0].tobytes()[:-1]
                    fh.write(b"%d,%s,%s\n" % (labels[i], row, usage.encode()))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "fer2013_full")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root: Path = args.dir
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "fer2013.csv"
    if not csv_path.is_file():
        t = time.perf_counter()
        write_full_size_csv(csv_path)
        print(
            f"wrote {csv_path} ({csv_path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t:.1f}s"
        )
    print(f"{csv_path}: {csv_path.stat().st_size / 1e6:.0f} MB, {sum(ROWS.values())} rows")
    csv_path.read_bytes()  # warm the page cache: we measure parsing, not the disk

    parse, build, reopen = [], [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        table = read_fer2013(csv_path, BadSamples("error"))
        parse.append(time.perf_counter() - t)
        assert table.images.shape == (35_887, 48, 48)
        del table

        cache = root / f"cache-{r}"
        shutil.rmtree(cache, ignore_errors=True)
        t = time.perf_counter()
        dm = FER2013DataModule(root=str(root), cache_dir=str(cache), num_workers=0)
        dm.setup()
        build.append(time.perf_counter() - t)
        sizes = {k: len(v) for k, v in dm.splits.items()}
        assert sizes == {"train": 28_709, "val": 3_589, "test": 3_589}, sizes

        t = time.perf_counter()
        dm2 = FER2013DataModule(root=str(root), cache_dir=str(cache), num_workers=0)
        dm2.setup()
        reopen.append(time.perf_counter() - t)
        assert isinstance(dm2.splits["train"].images, np.memmap)
        shutil.rmtree(cache, ignore_errors=True)
        print(
            f"repeat {r}: parse {parse[-1]:.2f}s  build cache {build[-1]:.2f}s  "
            f"reopen {reopen[-1] * 1000:.0f}ms"
        )
    print(
        f"best of {args.repeats}: parse {min(parse):.2f}s, build cache {min(build):.2f}s "
        f"(target <= 3 s), reopen {min(reopen) * 1000:.0f}ms (target well under 1 s); "
        f"median build {float(np.median(build)):.2f}s"
    )


if __name__ == "__main__":
    main()
