"""Find an ETT CSV file: explicit path, $FSNET_DATA_DIR, the cache, or a verified download."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from data.errors import DataError

KNOWN_SHA256: dict[str, str] = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
}
DOWNLOAD_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{dataset}.csv"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 digest (64 characters) of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Return the download cache directory: ``$FSNET_CACHE_DIR`` or ``~/.cache/fsnet-harness``."""
    env = os.environ.get("FSNET_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fsnet-harness"


def find_data_file(dataset: str = "ETTh1", path: str | os.PathLike[str] | None = None) -> Path:
    """Return the absolute path of ``<dataset>.csv``, sha256-verified when its name is in ``KNOWN_SHA256``.

    Looks, in order, at: the explicit ``path`` (a file, or a directory holding ``<dataset>.csv``; an
    explicit path that does not exist is an error, never skipped), ``$FSNET_DATA_DIR/<dataset>.csv``,
    the cache (``cache_dir()/<dataset>.csv``), and finally downloads a known dataset into the cache.
    Raises DataError on a checksum mismatch or when nothing is found.
    """
    name = f"{dataset}.csv"
    if path is not None:
        found = _explicit(Path(path).expanduser(), name)
        return _verified(found)

    looked: list[str] = []
    env = os.environ.get("FSNET_DATA_DIR")
    if env:
        candidate = Path(env).expanduser() / name
        if candidate.is_file():
            return _verified(candidate)
        looked.append(f"$FSNET_DATA_DIR={candidate.parent}")
    else:
        looked.append("$FSNET_DATA_DIR (unset)")

    cached = cache_dir() / name
    if cached.is_file():
        return _verified(cached)
    looked.append(f"cache {cached.parent}")

    if dataset not in KNOWN_SHA256:
        looked.append(f"no download known for dataset {dataset!r}")
    else:
        url = DOWNLOAD_URL.format(dataset=dataset)
        try:
            return _download(url, cached, KNOWN_SHA256[dataset])
        except OSError as exc:  # URLError, timeouts, unwritable cache ...
            looked.append(f"download {url} failed ({type(exc).__name__}: {exc})")
    raise DataError(name, "not found; looked in: " + "; ".join(looked))


def _explicit(path: Path, name: str) -> Path:
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise DataError(path, f"file not found ({path.absolute()})")
    return path.absolute()


def _verified(path: Path) -> Path:
    """Check a file named like a known dataset against its sha256; other names pass unchecked."""
    path = path.absolute()
    expected = KNOWN_SHA256.get(path.stem) if path.suffix == ".csv" else None
    if expected is not None:
        got = sha256_of(path)
        if got != expected:
            raise DataError(
                path,
                f"sha256 mismatch (expected {expected}, got {got}): file corrupted or modified ({path})",
            )
    return path


def _download(url: str, target: Path, expected: str) -> Path:
    """Stream ``url`` into a temp file beside ``target``; rename it into place only if its sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != expected:
            raise DataError(
                target,
                f"sha256 mismatch (expected {expected}, got {got}): download from {url} corrupted"
                " or modified",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target.absolute()
