"""The store: every content-addressed artefact the toolkit writes (DESIGN.md §5), and `python -m toolkit.cache
ls|info|verify|rm` over all of them. Two layouts:

- Features (below): one folder per entry, a manifest and memory-mappable per-layer arrays.
- Runs: `<root>/runs/<kind>/<key>.npz` for probe fits, chain steps and prompt scores, and a folder
  `<root>/runs/finetune/<key>/` (manifest, curve, weights, and its records in a `predictions.npz`) per
  fine-tuning run. Each `.npz` is one `pack`ed blob: named arrays and a JSON header under one crc32, written
  atomically, checked on every read (`read_blob`), so a damaged blob is recomputed, never used. A run's key is
  a hash of its inputs and of its kind's explicit format version (`run_path`), never of source text.

Features:

An entry is addressed by a hash of everything that changes its bytes (model identity, tokenizer,
dtype, template, task + ordered ids, pooling, layers, max length, truncation side, format
version) and of nothing that does not (device, batch size, process count). Layout:

    <root>/features/<task>__<model>__<key>/
        manifest.json          what the entry is, and a crc32 per array file (written last)
        layer_XX.npy           (n_examples, d) float32 (or float16, `store_dtype`) per layer, memory-mappable
        label_logprobs.npy     (n_examples, 2) zero-shot label-word log-probs (decoders only)
        n_tokens.npy           (n_examples,) token count after truncation
        truncated.npy          (n_examples,) whether the input was truncated to max_length

While extraction runs, shards go to `<entry>.partial/shard-XXXXX.npz` (each renamed into place
when complete), so a killed run resumes from its finished shards. The finished entry is built in
a temporary folder and renamed, so a reader sees either nothing or a complete entry; every array
is checked against its crc32 before any of its bytes is used, and a mismatch is reported with the path, never
used. A cache hit maps the layer files and checks each on its first read (`LayerFiles`), so a hit on a
gigabyte entry costs milliseconds and a caller pays only for the layers it reads.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit._util import ToolkitError, atomic_write_bytes, atomic_write_json, cache_root, cli_main, stable_hash

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CorruptEntry(ToolkitError):
    """An entry or shard failed verification; it is reported and re-extracted, never used."""


def features_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "features"


def entry_key(spec: dict) -> str:
    """Hash of the byte-changing inputs in `spec` (see module docstring)."""
    return stable_hash({**spec, "format_version": FORMAT_VERSION}, n=20)


def entry_dir(spec: dict, cache_dir=None) -> Path:
    slug = lambda s: "".join(c if c.isalnum() or c in "-._" else "-" for c in Path(str(s)).name)[:40]
    return features_root(cache_dir) / f"{slug(spec['task'])}__{slug(spec['model'])}__{entry_key(spec)}"


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


# ----------------------------------------------------------------------------- reading


class LayerFiles:
    """An entry's layer files, each memory-mapped and checked against its crc32 the first time it is read.

    A cache hit then costs no checksum work until a layer is used (an 8B model's 33-layer entry is a gigabyte),
    and a caller that uses some layers pays for those only. The crc is taken over the very mapping the array
    is then read from, so no byte is used unverified. Opening checks each file's header and size against the
    manifest, which catches a missing or truncated file at once."""

    def __init__(self, path: Path, layers: tuple[int, ...], crcs: dict, n: int, d: int, discard: bool = False,
                 refill=None):
        self.path, self.layers, self._crcs, self._discard, self._refill = path, layers, crcs, discard, refill
        self._checked: dict[int, np.ndarray] = {}
        self._headers = {layer: _npy_header(self.file(layer), (n, d)) for layer in layers}

    def file(self, layer: int) -> Path:
        return self.path / f"layer_{layer:03d}.npy"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, pos: int) -> np.ndarray:
        """The (n, d) array of the `pos`-th layer of `layers`, verified on first access."""
        layer = self.layers[pos]
        if layer not in self._checked:
            f = self.file(layer)
            raw = np.memmap(f, dtype=np.uint8, mode="r")
            if zlib.crc32(raw) != self._crcs[f.name]:
                del raw
                if not self._discard:
                    raise CorruptEntry(f"checksum mismatch in {f}")
                # found mid-run, after the hit was handed out: remove it, and extract it afresh (`refill`) or
                # leave that to the next run
                shutil.rmtree(self.path, ignore_errors=True)
                if self._refill is None:
                    raise CorruptEntry(f"checksum mismatch in {f}: the entry was removed; run again to extract it "
                                       "afresh")
                print(f"[cache] checksum mismatch in {f}: discarding the entry and extracting again",
                      file=sys.stderr)
                fresh, self._refill = self._refill().data, None  # at most once: a second mismatch is an error
                self._crcs, self._headers, self._checked = fresh._crcs, fresh._headers, {}
                return self[pos]
            dtype, shape, offset = self._headers[layer]
            self._checked[layer] = np.ndarray(shape, dtype, buffer=raw, offset=offset)
        return self._checked[layer]


def _npy_header(path: Path, shape: tuple[int, int]) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, data offset) of a C-order .npy file holding `shape`, whose size must match exactly."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            major, _ = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            got, fortran, dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        raise CorruptEntry(f"missing file {path}") from None
    except (ValueError, OSError) as e:
        raise CorruptEntry(f"unreadable array {path}: {e}") from None
    if tuple(got) != tuple(shape) or fortran or path.stat().st_size != offset + dtype.itemsize * int(np.prod(shape)):
        raise CorruptEntry(f"wrong shape or size in {path}")
    return dtype, tuple(got), offset


@dataclass(frozen=True, eq=False)
class Features:
    """A finished cache entry, aligned to `ids`: per layer an (n_examples, d) array, float32 or float16 as
    stored (the manifest's `store_dtype`). `data` is an (n_layers, n_examples, d) array, or the entry's
    `LayerFiles`, read and verified layer by layer as used."""

    path: Path
    manifest: dict
    ids: tuple[str, ...]
    layers: tuple[int, ...]
    data: np.ndarray | LayerFiles
    label_logprobs: np.ndarray | None
    n_tokens: np.ndarray

    @functools.cached_property
    def hidden(self) -> np.ndarray:
        """(n_layers, n_examples, d) in memory: every layer read (and verified) at once."""
        if isinstance(self.data, np.ndarray):
            return self.data
        if not len(self.data):
            return np.zeros((0, len(self.ids), self.manifest["hidden_size"]), dtype=np.float32)
        return np.stack([self.data[i] for i in range(len(self.data))])

    def index(self, ids) -> np.ndarray:
        """Row positions of `ids` (join by id, never by position); unknown ids are an error."""
        pos = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise ToolkitError(f"{len(missing)} id(s) not in the cache entry {self.path.name} "
                               f"(e.g. {missing[0]}); extract the task these ids come from")
        return np.fromiter((pos[i] for i in ids), dtype=np.int64, count=len(ids))

    def layer(self, layer: int) -> np.ndarray:
        """(n_examples, d) for one layer number (as in `layers`, 0 = embeddings)."""
        if layer not in self.layers:
            raise ToolkitError(f"layer {layer} is not in this entry "
                               f"(layers {self.layers[0]}..{self.layers[-1]})")
        return self.data[self.layers.index(layer)]

    def take(self, ids) -> np.ndarray:
        """(n_layers, len(ids), d) float32 rows of `ids`, gathered layer by layer: only those rows are copied."""
        rows = self.index(ids)
        out = np.empty((len(self.layers), len(rows), self.manifest.get("hidden_size") or self.data[0].shape[-1]),
                       dtype=np.float32)
        for i in range(len(self.layers)):
            out[i] = self.data[i][rows]
        return out

    def verify(self) -> None:
        """Read and check every layer now (`python -m toolkit.cache verify`)."""
        for i in range(len(self.data)):
            self.data[i]


def _checked_array(path: Path, crc: int) -> np.ndarray:
    if not path.exists():
        raise CorruptEntry(f"missing file {path}")
    if crc32_file(path) != crc:
        raise CorruptEntry(f"checksum mismatch in {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise CorruptEntry(f"unreadable array {path}: {e}") from None


def read_manifest(path: Path) -> dict:
    mf = path / MANIFEST
    if not mf.exists():
        raise CorruptEntry(f"no manifest in {path}")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise CorruptEntry(f"corrupt manifest {mf}: {e}") from None
    if manifest.get("format_version") != FORMAT_VERSION or "files" not in manifest:
        raise CorruptEntry(f"manifest {mf} is from another format version")
    return manifest


def load_entry(path: str | os.PathLike, layers=None, *, lazy: bool = False, refill=None) -> Features:
    """Read a finished entry. `layers`: a subset of layer numbers. Every layer file is memory-mapped and
    verified against its crc32: all of them now, or with `lazy` each on its first read, as a cache hit does
    (then a file failing its check removes the entry, and `refill()`, which extracts it afresh and returns its
    `Features`, serves the layers from then on; without `refill` the next run extracts it). The small files
    and every file's header and size are checked now either way."""
    path = Path(path)
    manifest = read_manifest(path)
    all_layers = tuple(manifest["layers"])
    want = all_layers if layers is None else tuple(layers)
    bad = [layer for layer in want if layer not in all_layers]
    if bad:
        raise ToolkitError(f"layer(s) {bad} not in entry {path.name}: "
                           f"it has layers {all_layers[0]}..{all_layers[-1]}")
    files = manifest["files"]
    logp = None
    if "label_logprobs.npy" in files:
        logp = _checked_array(path / "label_logprobs.npy", files["label_logprobs.npy"])
    n_tokens = _checked_array(path / "n_tokens.npy", files["n_tokens.npy"])
    data = LayerFiles(path, want, files, len(manifest["ids"]), manifest["hidden_size"], discard=lazy,
                      refill=refill)
    feats = Features(path, manifest, tuple(manifest["ids"]), want, data, logp, n_tokens)
    if not lazy:
        feats.verify()
    return feats


def try_load(spec: dict, cache_dir=None, layers=None, refill=None) -> Features | None:
    """The finished entry for `spec`, verified while read (`load_entry`, lazily, with `refill`); None if absent.
    A corrupt entry is reported with the path, removed, and None returned, so the caller extracts it again."""
    path = entry_dir(spec, cache_dir)
    if not path.exists():
        return None
    try:
        return load_entry(path, layers=layers, lazy=True, refill=refill)
    except CorruptEntry as e:
        print(f"[cache] {e}; discarding the entry and extracting again", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        return None


# ----------------------------------------------------------------------------- writing


def partial_dir(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def shard_path(path: Path, shard: int) -> Path:
    return partial_dir(path) / f"shard-{shard:05d}.npz"


def write_shard(path: Path, shard: int, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write one shard (uncompressed npz; no pickle) with a crc32 of its bytes in the name's
    sidecar, so a resumed run can trust a shard it did not write itself."""
    target = shard_path(path, shard)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    crc = crc32_file(tmp)
    atomic_write_json(target.with_suffix(".crc.json"), {"crc32": crc})
    os.replace(tmp, target)


def read_shard(path: Path, shard: int) -> dict[str, np.ndarray] | None:
    """A finished shard's arrays, or None if it is absent or fails its check (then it is deleted)."""
    target = shard_path(path, shard)
    side = target.with_suffix(".crc.json")
    if not target.exists() or not side.exists():
        return None
    try:
        if crc32_file(target) != json.loads(side.read_text())["crc32"]:
            raise ValueError("checksum mismatch")
        with np.load(target, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        print(f"[cache] shard {target} is corrupt ({e}); extracting it again", file=sys.stderr)
        target.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None


def finished_shards(path: Path) -> set[int]:
    pd = partial_dir(path)
    if not pd.exists():
        return set()
    return {int(p.stem.split("-")[1]) for p in pd.glob("shard-*.npz")}


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65,504


def as_float16(hidden: np.ndarray) -> np.ndarray:
    """A shard's float32 features rounded to float16 for storage, or left float32 when any value would not fit
    (|h| > 65,504 becomes inf in float16; large models' residual streams reach that). `commit_entry` then keeps
    the layers that need it in float32, so no inf is ever stored."""
    return hidden.astype(np.float16) if float(np.abs(hidden).max(initial=0.0)) <= FLOAT16_MAX else hidden


def commit_entry(path: Path, manifest: dict, n_shards: int) -> Path:
    """Concatenate the shards into the final layout in a temp folder, then rename it into place."""
    shards = [read_shard(path, s) for s in range(n_shards)]
    if any(s is None for s in shards):
        missing = [i for i, s in enumerate(shards) if s is None]
        raise CorruptEntry(f"cannot finish {path.name}: shard(s) {missing} missing or corrupt; run again")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    # Shards hold examples in length-sorted order; `index` puts each row back at its task position.
    index = np.concatenate([s["index"] for s in shards])
    if not np.array_equal(np.sort(index), np.arange(len(index))):
        raise CorruptEntry(f"cannot finish {path.name}: shards do not cover every example exactly once")
    inverse = np.argsort(index)

    def save(name: str, array: np.ndarray) -> None:
        np.save(tmp / name, np.ascontiguousarray(array[inverse]), allow_pickle=False)
        files[name] = crc32_file(tmp / name)

    wide = []  # layers of a float16 entry stored in float32: their values do not fit float16 (losslessly kept)
    for li, layer in enumerate(manifest["layers"]):
        rows = np.concatenate([s["hidden"][li] for s in shards])  # float32 if any shard had to stay float32
        if manifest.get("store_dtype") == "float16":
            if float(np.abs(rows).max(initial=0.0)) > FLOAT16_MAX:
                wide.append(layer)
                rows = rows.astype(np.float32)
            else:
                rows = rows.astype(np.float16)
        save(f"layer_{layer:03d}.npy", rows)
    if wide:
        manifest = {**manifest, "float32_layers": wide}
        print(f"[cache] {path.name}: layer(s) {wide} exceed float16's range (|h| > 65,504) and are stored in "
              "float32", file=sys.stderr)
    for key in ("label_logprobs", "n_tokens", "truncated"):
        if key in shards[0]:
            save(f"{key}.npy", np.concatenate([s[key] for s in shards]))
    if "truncated" in shards[0]:
        manifest = {**manifest, "n_truncated": int(sum(s["truncated"].sum() for s in shards))}
    atomic_write_json(tmp / MANIFEST, {**manifest, "files": files, "format_version": FORMAT_VERSION})
    if path.exists():  # a concurrent writer finished first; its entry is equivalent
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    shutil.rmtree(partial_dir(path), ignore_errors=True)
    return path


@contextlib.contextmanager
def entry_lock(path: Path):
    """Exclusive lock per entry, so two processes asking for one key do the work once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_writable(root: Path, need_bytes: int) -> None:
    """Fail before any long work if the cache cannot take the entry."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        raise ToolkitError(f"cache directory {root} is not writable ({e.strerror}); "
                           "pass --cache-dir or set TOOLKIT_CACHE_DIR to a writable folder") from None
    free = shutil.disk_usage(root).free
    if free < need_bytes:
        raise ToolkitError(f"cache directory {root} has {free / 1e9:.2f} GB free but this extraction needs "
                           f"about {need_bytes / 1e9:.2f} GB; free space or pass --cache-dir")


# ----------------------------------------------------------------------------- run stores

_KIND = re.compile(r"[a-z][a-z0-9_]*")
"""A run store's name: the folder `<root>/runs/<kind>/` (each method names its own: `probe`, `prompt`,
`finetune`, `chain`, or a plugin's); a store holds `.npz` blobs or finished run folders."""


def run_kinds(cache_dir=None) -> list[str]:
    """The run stores present under `<root>/runs/`."""
    root = runs_root(cache_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _KIND.fullmatch(p.name)) if root.is_dir() else []
_HEADER, _CRC = "__header__", "__crc32__"


def runs_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "runs"


def run_path(kind: str, spec: dict, cache_dir=None, *, n: int = 24, suffix: str = ".npz") -> Path:
    """Where the run store of `kind` keeps the artefact of `spec`: its inputs, which must include the kind's
    format version (`version`), so that a change of format never reads an old entry."""
    if not _KIND.fullmatch(kind):
        raise ToolkitError(f"run store name '{kind}' must be lower-case letters, digits and _ (e.g. 'probe')")
    if "version" not in spec:
        raise ToolkitError(f"a {kind} store key needs its format version")
    return runs_root(cache_dir) / kind / f"{stable_hash(spec, n)}{suffix}"


def _crc(arrays: dict[str, np.ndarray], header: bytes) -> int:
    crc = zlib.crc32(header)
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).tobytes(), crc)
    return crc


def pack(arrays: dict[str, np.ndarray], header: dict | None = None) -> bytes:
    """Named arrays and a JSON header as one .npz blob under one crc32 (see `unpack`)."""
    import io

    # key order kept: a record's extras become metric rows in their order, loaded or fresh
    head = json.dumps(header or {}, default=_json_default).encode()
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_HEADER: np.frombuffer(head, dtype=np.uint8),
                               _CRC: np.int64(_crc(arrays, head))})
    return buf.getvalue()


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and header of a `pack`ed blob; `CorruptEntry` if it is damaged in any way."""
    import io

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        head, crc = arrays.pop(_HEADER).tobytes(), int(arrays.pop(_CRC))
    except Exception as e:
        raise CorruptEntry(f"damaged blob (unreadable: {type(e).__name__}: {e})") from None
    if _crc(arrays, head) != crc:
        raise CorruptEntry("damaged blob (checksum mismatch)")
    return arrays, json.loads(head)


def write_blob(path: Path, arrays: dict[str, np.ndarray], header: dict | None = None) -> None:
    """`pack` written atomically to `path`."""
    atomic_write_bytes(path, pack(arrays, header))


def read_blob(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """`unpack` of the file at `path`; None when there is none; `CorruptEntry` (naming the path) if damaged."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return unpack(data)
    except CorruptEntry as e:
        raise CorruptEntry(f"{path}: {e}") from None


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray | tuple):
        return v.tolist() if isinstance(v, np.ndarray) else list(v)
    raise TypeError(f"cannot store {type(v).__name__} in a blob's header")


def run_entries(cache_dir=None) -> list[Path]:
    """Every finished run-store entry: `.npz` blobs, and fine-tuning run folders."""
    out = []
    for kind in run_kinds(cache_dir):
        root = runs_root(cache_dir) / kind
        if root.is_dir():
            out += sorted(p for p in root.iterdir() if not p.name.startswith(".")
                          and (p.suffix == ".npz" or (p / MANIFEST).exists()))
    return out


def verify_run(path: Path) -> None:
    """Read and check one run-store entry; `CorruptEntry` if it is damaged."""
    if path.is_dir():
        try:
            json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CorruptEntry(f"{path}: unreadable {MANIFEST} ({e})") from None
        if read_blob(path / "predictions.npz") is None:
            raise CorruptEntry(f"{path}: no predictions.npz")
    elif read_blob(path) is None:
        raise CorruptEntry(f"{path}: missing")


# ----------------------------------------------------------------------------- CLI


def entries(cache_dir=None) -> list[Path]:
    root = features_root(cache_dir)
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and not p.name.endswith(".partial"))


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


_ENTRY_NAME = re.compile(r".+__.+__[0-9a-f]{20}(\.partial)?")
"""What `entry_dir` names (and a `.partial` folder of an unfinished one)."""
_RUN_NAME = re.compile(r"[0-9a-f]{20}|[0-9a-f]{24}\.npz")
"""What `run_path` names: a fine-tuning run's folder, or another run's blob. Nothing else in the store is ours."""


def _ours(p: Path, cache_dir) -> bool:
    """Whether `p` is an entry the store created: a named child of `features/` or of `runs/<kind>/`."""
    parent = p.absolute().parent.resolve()  # the folder it sits in: a symlinked entry is still this cache's
    if parent == features_root(cache_dir).resolve():
        return bool(_ENTRY_NAME.fullmatch(p.name)) and p.is_dir()
    return (parent.parent == runs_root(cache_dir).resolve() and bool(_KIND.fullmatch(parent.name))
            and bool(_RUN_NAME.fullmatch(p.name)) and p.exists())


def _resolve_entry(name: str, cache_dir, *, delete: bool = False) -> Path:
    """The entry that `name` means: an entry's name (or a unique part of it) in this cache, features or runs, or
    a path (it contains a '/') to an entry. For `delete`, a path must be an entry this cache's store created
    (`_ours`), so that `rm` can never remove anything the store did not write, whatever path it is given."""
    if os.sep in name or (os.altsep and os.altsep in name):
        p = Path(name).expanduser()
        if delete:
            if not _ours(p, cache_dir):
                raise ToolkitError(f"'{name}' is not an entry of the cache at {cache_root(cache_dir)}; nothing "
                                   "removed (see `python -m toolkit.cache ls`, or pass --cache-dir)")
        elif not ((p / MANIFEST).exists() or p.suffix == ".npz"):
            raise ToolkitError(f"'{name}' is not a cache entry (no {MANIFEST} in it, not a run blob)")
        return p
    matches = [e for e in entries(cache_dir) + run_entries(cache_dir) if name in e.name]
    if delete:
        matches += [p for p in features_root(cache_dir).glob("*.partial") if name in p.name]
    if len(matches) != 1:
        raise ToolkitError(f"'{name}' matches {len(matches)} entries of the cache at {cache_root(cache_dir)}; "
                           "give a longer part of the name (see `python -m toolkit.cache ls`)")
    return matches[0]


def _verify(path: Path) -> None:
    if _KIND.fullmatch(path.parent.name) and path.parent.parent.name == "runs":
        verify_run(path)
    else:
        load_entry(path)


def _info(path: Path) -> dict:
    if path.is_dir():
        m = json.loads((path / MANIFEST).read_text())
        return {k: (f"{len(v)} ids" if k == "ids" else v) for k, v in m.items()}
    arrays, header = read_blob(path)
    return {"arrays": {k: list(v.shape) for k, v in arrays.items()},
            "header": {k: (f"{len(v)} items" if isinstance(v, list) and len(v) > 8 else v) for k, v in header.items()}}


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.cache",
                                     description="Inspect the store: features and every run store.")
    parser.add_argument("--cache-dir")
    # --cache-dir before or after the subcommand, as in `toolkit.models` (SUPPRESS: absent after it, the
    # value given before it stands)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=argparse.SUPPRESS, help="cache root (default: cache/ or "
                                                                        "$TOOLKIT_CACHE_DIR)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ls", help="list feature entries and the run stores", parents=[common])
    for cmd, what in (("info", "show an entry's manifest or header"), ("rm", "remove an entry of this cache")):
        sub.add_parser(cmd, help=what, parents=[common]).add_argument(
            "entry", help="a unique part of an entry's name, or the path of an entry")
    sub.add_parser("verify", help="check every file of every entry, features and runs",
                   parents=[common]).add_argument("entry", nargs="?")
    args = parser.parse_args(argv)
    if args.cmd == "ls":
        for e in entries(args.cache_dir):
            try:
                m = read_manifest(e)
                print(f"{e.name}  n={len(m['ids'])} layers={len(m['layers'])} d={m['hidden_size']} "
                      f"pool={m['pool']} dtype={m['dtype']} stored={m.get('store_dtype', 'float32')} "
                      f"{_size(e) / 1e6:.1f} MB")
            except CorruptEntry as err:
                print(f"{e.name}  CORRUPT: {err}")
        partial = [p.name for p in features_root(args.cache_dir).glob("*.partial")]
        for p in partial:
            print(f"{p}  (unfinished: resumes on the next run)")
        runs = run_entries(args.cache_dir)
        for kind in run_kinds(args.cache_dir):
            mine = [r for r in runs if r.parent.name == kind]
            if mine:
                size = sum(_size(r) if r.is_dir() else r.stat().st_size for r in mine)
                print(f"runs/{kind}  {len(mine)} entries, {size / 1e6:.1f} MB")
        return 0
    if args.cmd == "verify":
        if not args.entry and not features_root(args.cache_dir).is_dir() and not runs_root(args.cache_dir).is_dir():
            raise ToolkitError(f"no feature cache at {features_root(args.cache_dir)} (check --cache-dir)")
        targets = ([_resolve_entry(args.entry, args.cache_dir)] if args.entry
                   else entries(args.cache_dir) + run_entries(args.cache_dir))
        if not targets:
            print(f"no entries in {cache_root(args.cache_dir)}: nothing to verify")
        bad = 0
        for e in targets:
            try:
                _verify(e)
                print(f"ok       {e}")
            except CorruptEntry as err:
                bad += 1
                print(f"CORRUPT  {e}: {err}")
        return 1 if bad else 0
    path = _resolve_entry(args.entry, args.cache_dir, delete=args.cmd == "rm")
    if args.cmd == "info":
        print(json.dumps(_info(path), indent=2, default=str))
    else:
        print(remove(path))
    return 0


def remove(path: Path) -> str:
    """Remove one store entry and its lock file; returns what was done, in a line. A symlinked entry loses its
    link only: what it points to may be another cache's, and is left alone."""
    if path.is_symlink():
        target = path.resolve()
        path.unlink()
        done = f"removed the link {path} (its target {target} is left alone)"
    else:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        done = f"removed {path}"
    base = path.name.removesuffix(".partial")
    for lock in {path.with_name(base + ".lock"), path.with_name(path.name + ".lock")}:
        lock.unlink(missing_ok=True)
    return done


if __name__ == "__main__":
    raise SystemExit(main())
