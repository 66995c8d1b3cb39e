"""What a cache hit costs on a large entry, side by side in one run (best of N).

    python benchmarks/cache_hit.py [--n 2000] [--layers 33] [--d 4096] [--repeats 3]

Writes a synthetic entry through the cache's own writer (the default: 2,000 examples × 33 layers × 4,096
float32, 1.08 GB, the 8B shape's entry) into a temporary folder, then times:

- `eager`: `load_entry(path)`, every layer's crc32 checked before returning (the pre-#24 hit);
- `hit`: `load_entry(path, lazy=True)`, what `extract()` does on a hit (headers and sizes only);
- `hit + 1 layer`: the hit, then one layer read (its checksum included), as a probe on a chosen layer needs;
- `hit + all layers`: the hit, then every row of every layer gathered into float32 (`Features.take`), as a full
  layer sweep does.

The files are in the page cache (just written), so this measures checksum and mapping work, not the disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from toolkit.cache import _size, commit_entry, load_entry, write_shard


def build(root: Path, ids: list[str], n_layers: int, d: int) -> Path:
    n = len(ids)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n_layers, n, d), dtype=np.float32)
    path = root / "entry"
    write_shard(path, 0, {"index": np.arange(n), "hidden": hidden, "n_tokens": np.full(n, 100, np.int64)})
    manifest = {"ids": ids, "layers": list(range(n_layers)), "hidden_size": d}
    return commit_entry(path, manifest, 1)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=33)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="toolkit-hit-") as tmp:
        ids = [f"{i:016x}" for i in range(args.n)]
        path = build(Path(tmp), ids, args.layers, args.d)
        size = _size(path)
        mid = args.layers // 2
        arms = {
            "eager": lambda: load_entry(path),
            "hit": lambda: load_entry(path, lazy=True),
            "hit + 1 layer": lambda: load_entry(path, lazy=True).layer(mid).sum(),
            "hit + all layers": lambda: load_entry(path, lazy=True).take(ids),
        }
        times = {name: best_of(fn, args.repeats) for name, fn in arms.items()}
        blob = np.ones(size // 8, dtype=np.float64).tobytes()
        crc = best_of(lambda: zlib.crc32(blob), args.repeats)
    print(f"entry {args.n} x {args.layers} layers x {args.d} float32 = {size / 1e9:.2f} GB; "
          f"zlib {zlib.ZLIB_VERSION} crc32 {size / crc / 1e9:.2f} GB/s")
    for name, secs in times.items():
        print(f"{name:18} {secs * 1e3:9.1f} ms   {times['eager'] / secs:6.1f}x eager")


if __name__ == "__main__":
    main()
