"""Resumable, checksummed download of the official Vaihingen archives (``segweak download``).

The ISPRS data are handed out after a request form, so segweak knows no URL: pass either a base URL
(the official file names are appended) or explicit ``.zip`` URLs, and HTTP basic-auth credentials if
the server needs them. Each file is downloaded into ``NAME.part``; an interrupted download resumes with
an HTTP ``Range`` request, and the file is renamed to ``NAME`` only when complete and, when a SHA-256 is
known (``--sha256 NAME=HEX`` or :data:`KNOWN_SHA256`), verified. Only the standard library is used for
HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segweak.data.sources import VAIHINGEN_ERODED_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ZIP
from segweak.errors import SegweakError

REQUIRED = (VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP)
OPTIONAL = (VAIHINGEN_ERODED_ZIP,)

KNOWN_SHA256: dict[str, str] = {}
"""SHA-256 of the official archives. Deliberately empty: segweak records no checksum it has not verified
itself. Pass ``--sha256 NAME=HEX`` to verify; the digest of every download is printed so it can be noted."""

CHUNK = 1 << 20
_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class DownloadResult:
    """Outcome for one file.

    Attributes:
        name: File name.
        path: Final path (None when an optional file was not found on the server).
        sha256: Hex digest of the file.
        verified: The digest was checked against a known value.
        resumed_from: Bytes already present in ``.part`` when this run started (0 = fresh).
        status: ``downloaded``, ``present`` (already complete) or ``missing`` (optional file, 404).
    """

    name: str
    path: Path | None
    sha256: str | None
    verified: bool
    resumed_from: int
    status: str


def parse_sha256(items: list[str] | None) -> dict[str, str]:
    """Parse ``NAME=HEX`` strings into a dict, validating the hex digests."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, digest = item.partition("=")
        digest = digest.strip().lower()
        if not sep or not name or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SegweakError(f"--sha256 {item!r} must be NAME=HEX with a 64-digit hex SHA-256")
        out[name.strip()] = digest
    return out


def resolve_urls(urls: list[str]) -> list[tuple[str, str, bool]]:
    """Turn ``--url`` values into (file name, url, required) triples.

    A URL whose path ends in ``.zip`` names one file; any other URL is a base to which the three
    official names are appended (the eroded archive being optional).
    """
    if not urls:
        raise SegweakError(
            "pass --url: a base URL of the ISPRS Vaihingen files (the official zip names are "
            "appended) or the URL of each zip"
        )
    out: list[tuple[str, str, bool]] = []
    for url in urls:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https"):
            raise SegweakError(f"--url {url!r} must start with http:// or https://")
        name = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
        if name.lower().endswith(".zip"):
            out.append((name, url, True))
        else:
            base = url if url.endswith("/") else url + "/"
            out.extend((n, urllib.parse.urljoin(base, urllib.parse.quote(n)), True) for n in REQUIRED)
            out.extend((n, urllib.parse.urljoin(base, urllib.parse.quote(n)), False) for n in OPTIONAL)
    names = [n for n, _, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SegweakError(f"--url gives {sorted(dup)} more than once; pass each file once")
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _http_error(exc: urllib.error.HTTPError, url: str) -> SegweakError:
    if exc.code in (401, 403):
        return SegweakError(
            f"{url}: HTTP {exc.code} ({exc.reason}); the server refused the credentials: pass the "
            "ISPRS login with --user and --password"
        )
    if exc.code == 404:
        return SegweakError(f"{url}: HTTP 404, no such file; check --url (base URL or the URL of each zip)")
    return SegweakError(f"{url}: HTTP {exc.code} ({exc.reason})")


class _Progress:
    """A rich progress bar when enabled, otherwise nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def task(self, name: str, total: int | None, done: int) -> Any:
        return None if self.bar is None else self.bar.add_task(name, total=total, completed=done)

    def advance(self, task: Any, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(task, n)


def _fetch(
    url: str, dest: Path, auth: str | None, expected: str | None, progress: _Progress, timeout: float
) -> tuple[int, str]:
    """Download ``url`` to ``dest`` via ``dest.part`` with resume; returns (resumed_from, sha256)."""
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "segweak-download"}
    if auth:
        headers["Authorization"] = auth
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) checked in resolve_urls
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # The part already holds the whole file (or is longer than it): check its size.
            m = _RANGE_RE.match(exc.headers.get("Content-Range", "") or "")
            total = int(m.group(3)) if m and m.group(3) != "*" else None
            if total is None:
                m2 = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
                total = int(m2.group(1)) if m2 else None
            if total == start:
                return start, _finish(part, dest, expected)
            part.unlink()
            raise SegweakError(
                f"{part} did not match the file on the server and was deleted; run the download again"
            ) from None
        raise _http_error(exc, url) from None
    except urllib.error.URLError as exc:
        raise SegweakError(f"{url}: cannot connect ({exc.reason}); check the URL and the network") from None
    with resp:
        if start and resp.status == 206:
            m = _RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != start:
                raise SegweakError(
                    f"{url}: the server answered the resume request with an unexpected range "
                    f"{resp.headers.get('Content-Range')!r}; delete {part} and retry"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:
            # A 200 answer to a range request means the server cannot resume: start over.
            start = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        resumed = start
        task = progress.task(dest.name, total, start)
        written = start
        with open(part, mode) as fh:
            while True:
                try:
                    block = resp.read(CHUNK)
                except OSError as exc:
                    raise SegweakError(
                        f"{url}: connection lost after {written} bytes ({exc}); run the same "
                        f"command again to resume from {part}"
                    ) from None
                if not block:
                    break
                fh.write(block)
                written += len(block)
                progress.advance(task, len(block))
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and written != total:
        raise SegweakError(
            f"{url}: got {written} of {total} bytes; run the same command again to resume from {part}"
        )
    return resumed, _finish(part, dest, expected)


def _finish(part: Path, dest: Path, expected: str | None) -> str:
    digest = _sha256_file(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise SegweakError(
            f"{dest.name}: SHA-256 is {digest}, expected {expected}; the download is corrupt or the "
            "checksum is wrong. The partial file was deleted; run the download again"
        )
    os.replace(part, dest)
    return digest


def download(
    out: str | os.PathLike[str],
    urls: list[str],
    user: str | None = None,
    password: str | None = None,
    sha256: dict[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[DownloadResult]:
    """Download the Vaihingen archives into ``out``.

    Args:
        out: Target directory (created when missing).
        urls: Base URL(s) and/or explicit ``.zip`` URLs (see :func:`resolve_urls`).
        user: HTTP basic-auth user name (ISPRS login).
        password: HTTP basic-auth password.
        sha256: File name -> expected hex digest; overrides :data:`KNOWN_SHA256`.
        progress: Show a progress bar.
        timeout: Socket timeout in seconds.

    Returns:
        One :class:`DownloadResult` per file.

    Raises:
        SegweakError: HTTP errors (401/403: credentials, 404: URL), checksum mismatch, short download.
    """
    if (user is None) != (password is None):
        raise SegweakError("pass both --user and --password (or neither)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    known = {**KNOWN_SHA256, **(sha256 or {})}
    plan = resolve_urls(urls)
    unknown = set(sha256 or {}) - {n for n, _, _ in plan}
    if unknown:
        raise SegweakError(
            f"--sha256 names {sorted(unknown)} that are not downloaded; use the zip file names"
        )
    auth = None
    if user is not None:
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    results: list[DownloadResult] = []
    with _Progress(progress) as bar:
        for name, url, required in plan:
            dest = out / name
            expected = known.get(name)
            if dest.exists():
                digest = _sha256_file(dest)
                if expected is not None and digest != expected:
                    raise SegweakError(
                        f"{dest} exists but its SHA-256 {digest} is not the expected {expected}; "
                        "delete it and download again"
                    )
                results.append(DownloadResult(name, dest, digest, expected is not None, 0, "present"))
                continue
            try:
                resumed, digest = _fetch(url, dest, auth, expected, bar, timeout)
            except SegweakError as exc:
                if not required and "HTTP 404" in str(exc):
                    results.append(DownloadResult(name, None, None, False, 0, "missing"))
                    continue
                raise
            results.append(DownloadResult(name, dest, digest, expected is not None, resumed, "downloaded"))
    return results
