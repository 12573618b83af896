"""The table of supported data sets and where to find their files.

Lookup order of :func:`locate` (first folder holding a complete set of files wins):

1. the explicit ``root`` argument (``--data-root``): the folder itself, then its
   name variants (``root/mnist``, ``root/MNIST/raw``, ``root/cifar-10-batches-bin``...); a root
   that does not exist is an error (a typo must not train on another copy found later);
2. ``$ONEBIT_DATA``: its name variants, then the folder itself;
3. known system locations (:func:`system_bases`): ``/usr/share/datasets``
   (Debian's ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``),
   the download cache (``$ONEBIT_CACHE`` or ``~/.cache/onebit``) and, if it
   exists, ``../shared/data`` relative to the current directory;
4. a download from the official URLs into the cache (unless disabled);
5. otherwise :class:`~onebit.data.errors.DataNotFoundError` listing all of the above.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .download import DownloadFailed, RemoteFile, download_file, downloads_disabled, extract_members
from .errors import DataError, DataNotFoundError

__all__ = [
    "FileSet",
    "DatasetInfo",
    "names",
    "info",
    "cache_dir",
    "system_bases",
    "candidate_dirs",
    "find_files",
    "locate",
]


@dataclass(frozen=True)
class FileSet:
    """One on-disk layout of a data set: a format and the files it needs.

    ``roles`` maps each logical file (e.g. ``"train-images"``) to the names it
    may have, in order of preference; ``dirs`` means the entries are folders.
    """

    kind: str
    roles: tuple[tuple[str, tuple[str, ...]], ...]
    dirs: bool = False

    def resolve(self, folder: Path) -> tuple[dict[str, Path], list[str]]:
        """Return ``({role: path}, [missing role descriptions])`` for ``folder``."""
        found: dict[str, Path] = {}
        missing: list[str] = []
        for role, alternatives in self.roles:
            for fname in alternatives:
                p = folder / fname
                if (p.is_dir() if self.dirs else p.is_file()):
                    found[role] = p
                    break
            else:
                missing.append(" or ".join(alternatives))
        return found, missing


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    ``mean`` / ``std`` are per channel in ``[0, 1]`` pixel units (``x / 255``).
    ``files`` are the accepted on-disk layouts, ``subdirs`` the folder names
    looked for under a base folder, ``downloads`` the official files.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[FileSet, ...] = ()
    subdirs: tuple[str, ...] = ()
    downloads: tuple[RemoteFile, ...] = field(default=(), repr=False)
    homepage: str = ""
    how_to_get: str = ""

    @property
    def train_size(self) -> int | None:
        """Official number of training images (None if it varies)."""
        return _SIZES.get(self.name, (None, None))[0]

    @property
    def test_size(self) -> int | None:
        """Official number of test images (None if it varies)."""
        return _SIZES.get(self.name, (None, None))[1]


def _idx_fileset() -> FileSet:
    def alts(stem: str) -> tuple[str, ...]:
        return (f"{stem}-idx{'3' if 'images' in stem else '1'}-ubyte.gz",
                f"{stem}-idx{'3' if 'images' in stem else '1'}-ubyte",
                f"{stem}.idx{'3' if 'images' in stem else '1'}-ubyte")

    return FileSet("idx", (("train-images", alts("train-images")), ("train-labels", alts("train-labels")),
                           ("test-images", alts("t10k-images")), ("test-labels", alts("t10k-labels"))))


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")


def _idx_downloads(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f, tuple(m + f for m in mirrors), md5=h) for f, h in md5s.items())


_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_ENV_HINT = "Then pass the folder with --data-root DIR (root=DIR in Python) or set ONEBIT_DATA=DIR"
_DOWNLOAD_HINT = "; or allow onebit to download it (unset ONEBIT_NO_DOWNLOAD, needs network access)"

_TABLE: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, 1, 28, (0.1307,), (0.3081,),
        files=(_idx_fileset(),),
        subdirs=("mnist", "MNIST/raw", "MNIST", "mnist/raw"),
        downloads=_idx_downloads(_MNIST_MIRRORS, {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        }),
        homepage="http://yann.lecun.com/exdb/mnist/",
        how_to_get="Download the 4 files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                   "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz from "
                   "https://ossci-datasets.s3.amazonaws.com/mnist/ (or http://yann.lecun.com/exdb/mnist/) "
                   "into one folder.",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,),
        files=(_idx_fileset(),),
        subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "fashion-mnist/raw",
                 "fashion-mnist/data/fashion", "fashion"),
        downloads=_idx_downloads(_FASHION_MIRRORS, {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        }),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        how_to_get="On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs "
                   "/usr/share/datasets/fashion-mnist, found automatically). Or download the 4 .gz files "
                   "from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
                   "(see https://github.com/zalandoresearch/fashion-mnist) into one folder.",
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        files=(FileSet("cifar10-bin", tuple((b, (b + ".bin",)) for b in _CIFAR10_BATCHES)),
               FileSet("cifar10-py", tuple((b, (b,)) for b in _CIFAR10_BATCHES))),
        subdirs=("cifar-10-batches-bin", "cifar10", "cifar-10", "CIFAR10", "cifar10/cifar-10-batches-bin",
                 "cifar-10/cifar-10-batches-bin", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"),
        downloads=(RemoteFile("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                              md5="c32a1d4ab5d03f1284b67883e8d87530",
                              members=tuple(b + ".bin" for b in _CIFAR10_BATCHES) + ("batches.meta.txt",)),),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        how_to_get="Download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it "
                   "(`tar xzf cifar-10-binary.tar.gz` gives cifar-10-batches-bin/). The python version "
                   "(cifar-10-batches-py/) is read too, with a safe pickle reader.",
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        files=(FileSet("cifar100-bin", (("train", ("train.bin",)), ("test", ("test.bin",)))),
               FileSet("cifar100-py", (("train", ("train",)), ("test", ("test",))))),
        subdirs=("cifar-100-binary", "cifar100", "cifar-100", "CIFAR100", "cifar100/cifar-100-binary",
                 "cifar-100/cifar-100-binary", "cifar-100-python", "cifar100/cifar-100-python"),
        downloads=(RemoteFile("cifar-100-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
                              md5="03b5dce01913d631647c71ecec9e9cb8",
                              members=("train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt")),),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        how_to_get="Download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and extract it "
                   "(`tar xzf cifar-100-binary.tar.gz` gives cifar-100-binary/).",
    ),
    "svhn": DatasetInfo(
        "svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        files=(FileSet("svhn-mat", (("train", ("train_32x32.mat",)), ("test", ("test_32x32.mat",)))),),
        subdirs=("svhn", "SVHN", "housenumbers"),
        downloads=(RemoteFile("train_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                              md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
                   RemoteFile("test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                              md5="eb5a983be6a315427106f1b6e7c9bc6c")),
        homepage="http://ufldl.stanford.edu/housenumbers/",
        how_to_get="Download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and test_32x32.mat "
                   "into one folder (reading them needs `pip install scipy`).",
    ),
    "imagefolder": DatasetInfo(
        "imagefolder", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        files=(FileSet("imagefolder", (("train", ("train",)), ("test", ("val", "validation", "test"))), dirs=True),),
        subdirs=("imagefolder", "imagenet", "ImageNet", "ILSVRC2012", "imagenet/ILSVRC2012"),
        homepage="https://www.image-net.org/",
        how_to_get="Arrange the images as DIR/train/<class>/<image> and DIR/val/<class>/<image> "
                   "(ImageNet-style; get ImageNet from https://www.image-net.org/).",
    ),
}

_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000),
    "cifar100": (50000, 10000), "svhn": (73257, 26032),
}


def names() -> list[str]:
    """Names of the supported data sets."""
    return list(_TABLE)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; unknown names raise DataError listing the known ones."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100", "image-folder": "imagefolder"}.get(key, key)
    try:
        return _TABLE[key]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known data sets: {', '.join(names())}.") from None


def cache_dir() -> Path:
    """Download cache: ``$ONEBIT_CACHE``, else ``$XDG_CACHE_HOME/onebit``, else ``~/.cache/onebit``."""
    if os.environ.get("ONEBIT_CACHE"):
        return Path(os.environ["ONEBIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "onebit"


def system_bases() -> list[Path]:
    """Known base folders searched after the explicit root and ``$ONEBIT_DATA``.

    Tests replace this function to isolate themselves from the machine.
    """
    bases = [Path("/usr/share/datasets"), cache_dir()]
    shared = Path.cwd().parent / "shared" / "data"
    if shared.is_dir():
        bases.append(shared)
    return bases


def candidate_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Every folder :func:`locate` looks in, in order, as ``(folder, where-from)``."""
    ds = info(name)
    out: list[tuple[Path, str]] = []
    if root is not None:
        base = Path(root).expanduser()
        out.append((base, "root"))
        out += [(base / s, "root") for s in ds.subdirs]
    env = os.environ.get("ONEBIT_DATA")
    if env:
        base = Path(env).expanduser()
        out += [(base / s, "$ONEBIT_DATA") for s in ds.subdirs]
        out.append((base, "$ONEBIT_DATA"))
    for base in system_bases():
        out += [(base / s, "system") for s in ds.subdirs]
    seen: set[Path] = set()
    uniq = []
    for p, why in out:
        if p not in seen:
            seen.add(p)
            uniq.append((p, why))
    return uniq


def find_files(folder: Path, ds: DatasetInfo) -> tuple[FileSet, dict[str, Path]] | None:
    """The first layout of ``ds`` complete in ``folder``, with its files; else None."""
    if not folder.is_dir():
        return None
    for fs in ds.files:
        found, missing = fs.resolve(folder)
        if not missing:
            return fs, found
    return None


def _describe(folder: Path, ds: DatasetInfo) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "not a folder"
    best: list[str] | None = None
    for fs in ds.files:
        found, missing = fs.resolve(folder)
        if found and (best is None or len(missing) < len(best)):
            best = missing
    if best is None:
        return "no data-set files"
    return "incomplete, missing " + ", ".join(best)


def _download(ds: DatasetInfo) -> Path:
    dest = cache_dir() / ds.name
    for remote in ds.downloads:
        if all((dest / f).is_file() for f in remote.provides()):
            continue
        path = download_file(remote, dest)
        if remote.members:
            extract_members(path, dest, remote.members)
            path.unlink(missing_ok=True)
    return dest


def check_root(root: str | os.PathLike[str] | None) -> None:
    """An explicit data root must be a folder (no fall-through to another copy of the data)."""
    if root is not None and not Path(root).expanduser().is_dir():
        raise DataNotFoundError(f"the data root {root} (--data-root) does not exist or is not a folder")


def _warn_fell_through(name: str, root, folder: Path, why: str) -> None:
    """The user named a data root that lacks the data set: say which copy is read instead (once per
    run: only the first process of a multi-process run, ``RANK`` 0, warns)."""
    if os.environ.get("RANK", "0") == "0":
        warnings.warn(f"data set {name!r} is not (complete) in the data root {root}; reading the copy in "
                      f"{folder} ({why})", stacklevel=3)


def resolve(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[Path, FileSet, dict[str, Path]]:
    """Like :func:`locate` but also returns the layout found and its files."""
    ds = info(name)
    check_root(root)
    looked: list[str] = []
    for folder, why in candidate_dirs(ds.name, root):
        hit = find_files(folder, ds)
        if hit is not None:
            if root is not None and why != "root":
                _warn_fell_through(ds.name, root, folder, why)
            return folder, hit[0], hit[1]
        looked.append(f"  - {folder} ({why}): {_describe(folder, ds)}")
    if not ds.downloads:
        dl = "no download is available for this data set"
    elif not download:
        dl = "download not attempted (download=False)"
    elif downloads_disabled():
        dl = "download disabled by ONEBIT_NO_DOWNLOAD"
    else:
        try:
            folder = _download(ds)
        except DownloadFailed as e:
            dl = f"download failed ({e})"
        else:
            hit = find_files(folder, ds)
            if hit is not None:
                if root is not None:
                    _warn_fell_through(ds.name, root, folder, "download")
                return folder, hit[0], hit[1]
            dl = f"downloaded into {folder}, but it is {_describe(folder, ds)}"
    raise DataNotFoundError(
        f"data set {ds.name!r} not found. Looked in:\n" + "\n".join(looked)
        + f"\n  - {cache_dir() / ds.name} (download): {dl}"
        + f"\nHow to get it: {ds.how_to_get}\n{_ENV_HINT}{_DOWNLOAD_HINT if ds.downloads else ''}."
    )


def locate(name: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """The folder holding the files of data set ``name`` (see the module docstring for the order).

    Raises DataNotFoundError (listing every place looked in and how to get
    the data) if it is nowhere and cannot be downloaded.
    """
    return resolve(name, root, download)[0]
