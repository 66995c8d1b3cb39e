"""Small shared helpers: the user-facing error type, the cache root, hashing and atomic writes.

Every other module imports from here; this module imports nothing from the toolkit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "TOOLKIT_CACHE_DIR"


class ToolkitError(ValueError):
    """A user error (bad name, bad file, bad size, ...). The CLIs print its message in one line,
    without a traceback; the library raises it like any ValueError."""


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache root: `override`, else $TOOLKIT_CACHE_DIR, else `cache/` in the project checkout
    (or `~/.cache/toolkit` when the package is installed outside a checkout)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT / "cache"
    return Path.home() / ".cache" / "toolkit"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hex digest (first `n` chars of sha256) of a JSON-serialisable object, key order independent."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def rng(seed: int, *salt: int) -> np.random.Generator:
    """The random generator of `seed` for one purpose. Every random draw of the toolkit derives from the run's
    seed here: `salt` (constants named where they are used, e.g. `prompt.DEMO_SALT`) keeps the purposes
    independent, through numpy's SeedSequence, so that demonstrations never mirror the split's own shuffle.
    `rng(s)` is `np.random.default_rng(s)`."""
    return np.random.default_rng([int(seed), *map(int, salt)])


def derive_seed(seed: int, *salt: int) -> int:
    """A 63-bit integer seed derived from `seed` and `salt` as `rng` derives its generator, for libraries that
    take an integer (`torch.manual_seed`)."""
    return int(np.random.SeedSequence([int(seed), *map(int, salt)]).generate_state(1, np.uint64)[0] >> 1)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename,
    so a reader never sees a half-written file and a killed writer leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def cli_main(fn):
    """Decorator for `main()` of a CLI: a ToolkitError becomes one line on stderr and exit code 2; Ctrl-C one
    line and exit code 130 (the shell's for SIGINT). Every store is written atomically, so what finished is
    kept and a rerun resumes from it."""
    import functools
    import sys

    @functools.wraps(fn)
    def wrapper(argv=None, *args, **kwargs):
        try:
            return fn(argv, *args, **kwargs)
        except ToolkitError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: finished work is cached; the same command resumes from it", file=sys.stderr)
            return 130

    return wrapper


COMMANDS = ("compare", "extract", "probe", "prompt", "finetune", "tasks", "models", "cache")
"""The toolkit's command-line entry points (`python -m toolkit.<name>`)."""


def not_a_command(module: str) -> int:
    """What `python -m` on a library module does: one line naming the commands there are, and exit code 2
    (instead of running nothing and exiting 0)."""
    import sys

    print(f"error: {module} is a library module, not a command; the commands are "
          f"{', '.join(f'python -m toolkit.{c}' for c in COMMANDS)} (each takes --help)", file=sys.stderr)
    return 2
