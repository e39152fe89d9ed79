"""Fetching one file over HTTP(S): resumed with a Range request from its .part file, checked against
its sha256 and its largest possible size, written only when complete, one fetch per folder at a time
(a lock), and every failure one line that says what to do (retry, resume, free space).

    python dataloader.py download ML-100K --refined        # fetches the published splits through it

urllib and tqdm are imported inside the fetch, so that `--help` and flag errors answer at once.
"""
import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import sys
from pathlib import Path

from catalog import EXPECTED_SHA256, EXPECTED_SIZE, MAX_CHECKED_BYTES
from utils import InputError, sha256_of


class DownloadError(InputError):
    """A download that failed on the network side (the user may retry or fetch by hand)."""


class DownloadInterrupted(DownloadError):
    """A transfer that broke off midway; its .part file is kept and the same command resumes it."""


def redacted(url: str) -> str:
    """`url` with the password of a `user:password@` masked, as every message shows a URL."""
    scheme, sep, rest = str(url).partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at:
        return str(url)
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def refuse_credentials(url, what="URL") -> None:
    """InputError for a URL that carries a user name or password: fetch never sends them (a server
    that needs them would only answer 401), and the URL is shown in messages; named with the
    password masked."""
    if url and redacted(url) != str(url):
        raise InputError(f"{what} {redacted(url)}: a user name or password in a URL is not used; give the URL "
                         f"without it (a server that allows anonymous reads), or fetch the file by hand")


def fetch(url, dest, expected_sha256=None, progress=True, timeout=60):
    """Download `url` to `dest` via `dest.part`; resume a previous .part with an HTTP Range request.

    Returns the sha256 of the file. Raises DownloadError when the server cannot be reached or
    refuses, DownloadInterrupted when a transfer breaks off (the .part is kept so a rerun
    resumes), InputError on a checksum mismatch or a file longer than it can be (the .part is
    removed) and on a write error (the .part is removed too: it is a disk's problem, not the
    network's). Nothing is ever left under `dest` unless it is complete and, when
    `expected_sha256` is given, verified. Fetches into one folder by several processes take turns
    (a lock on the folder): they would share one .part; one that finds `dest` made meanwhile uses it.
    """
    refuse_credentials(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another download into {dest.parent} to finish", file=sys.stderr)
            fcntl.flock(folder, fcntl.LOCK_EX)
        if dest.exists():  # fetched by the process we waited for
            got = sha256_of(dest)
            if expected_sha256 and got != expected_sha256:
                raise InputError(f"{dest} appeared during the download and differs from the published file "
                                 f"(sha256 {got}); move it away and rerun")
            return got
        return _fetch_locked(url, dest, expected_sha256, progress, timeout)
    finally:
        os.close(folder)  # releases the lock


def size_limit(dest, expected_sha256):
    """The most bytes `dest` may have: its known size, else MAX_CHECKED_BYTES when its sha256 is known
    (a longer file cannot match it), else no limit."""
    known = EXPECTED_SIZE.get(Path(dest).name)
    if known is not None and expected_sha256 == EXPECTED_SHA256.get(Path(dest).name):
        return known
    return MAX_CHECKED_BYTES if expected_sha256 else None


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _fetch_locked(url, dest, expected_sha256, progress, timeout):
    import http.client  # here, not at the top: with urllib they cost 0.1 s of every `--help`
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    limit = size_limit(dest, expected_sha256)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "refine-repro"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The .part is already as long as the file (or longer): start over.
            part.unlink()
            return _fetch_locked(url, dest, expected_sha256, progress, timeout)
        if 300 <= error.code < 400:  # urllib's own words for this span three lines
            raise DownloadError(f"{url}: the server redirects in a loop (HTTP {error.code}, too many redirects); "
                                f"fetch it by hand") from None
        raise DownloadError(f"{url}: HTTP {error.code} {_one_line(error.reason)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot reach {url} ({_one_line(reason)})") from None

    def too_long(size):
        if part.exists():
            part.unlink()
        return InputError(f"{url}: the server sends more than the {limit} bytes {dest.name} can have (at least "
                          f"{size}); stopped, nothing kept; check the URL")

    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0  # server ignored Range (200): restart from byte 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if limit is not None and total is not None and total > limit:
            raise too_long(total)
        digest = hashlib.sha256()
        if resumed:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress, file=sys.stderr)
        try:
            with _open_part(part, "ab" if resumed else "wb", url) as handle:
                while True:
                    try:
                        block = response.read(1 << 16)
                    except (http.client.IncompleteRead, OSError, socket.timeout) as error:
                        raise DownloadInterrupted(
                            f"download of {url} interrupted after {received} bytes ({_one_line(repr(error))}); "
                            f"partial file kept at {part}, rerun the same command to resume") from None
                    if not block:
                        break
                    received += len(block)
                    if limit is not None and received > limit:
                        raise too_long(received)
                    _write_part(handle, block, part, url)
                    digest.update(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and received != total:
        raise DownloadInterrupted(f"download of {url} stopped at {received} of {total} bytes; partial file "
                                  f"kept at {part}, rerun the same command to resume")
    got = digest.hexdigest()
    if expected_sha256 and got != expected_sha256:
        part.unlink()
        raise InputError(f"checksum mismatch for {url}: expected sha256 {expected_sha256}, got {got}; "
                         f"the corrupted download was deleted, rerun to try again")
    os.replace(part, dest)
    return got


def _write_failed(error, part, url):
    """A write error of the .part as what it is, with the .part removed (a full disk needs the space)."""
    with contextlib.suppress(OSError):
        part.unlink()
    hint = {errno.ENOSPC: "free space", errno.EDQUOT: "free space", errno.EACCES: "check its permissions",
            errno.EROFS: "download somewhere writable"}.get(error.errno, "fix it")
    return InputError(f"{part}: {error.strerror or error} while writing the download of {url}; {hint} and rerun "
                      f"the same command (the partial file was removed)")


@contextlib.contextmanager
def _open_part(part, mode, url):
    try:
        handle = open(part, mode)
    except OSError as error:
        raise _write_failed(error, part, url) from None
    with handle:
        yield handle


def _write_part(handle, block, part, url):
    try:
        handle.write(block)
        handle.flush()
    except OSError as error:
        raise _write_failed(error, part, url) from None
