import base64
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from segweak.data.download import download, parse_sha256, resolve_urls
from segweak.data.sources import VAIHINGEN_ERODED_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ZIP, VaihingenSource
from segweak.data.synthetic import synthesize
from segweak.errors import SegweakError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.root`` with Range support and optional basic auth."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if srv.auth and self.headers.get("Authorization") != srv.auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="isprs"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = srv.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = synthesize(
        tmp_path_factory.mktemp("srv") / "zips", n_tiles=2, height=48, width=48, seed=4, zips=True
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.auth, server.requests = root, None, []
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_full_download_then_readable(served, tmp_path):
    server, base, root = served
    res = download(tmp_path / "dl", [base], progress=False)
    assert [r.name for r in res] == [VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ERODED_ZIP]
    for r in res:
        assert r.status == "downloaded" and r.sha256 == _sha(root / r.name) and not r.verified
        assert (tmp_path / "dl" / r.name).read_bytes() == (root / r.name).read_bytes()
    assert not list((tmp_path / "dl").glob("*.part"))
    src = VaihingenSource(tmp_path / "dl", eroded=True)
    assert [t.id for t in src.tiles()] == ["area1", "area2"]
    img, mask = src.tiles()[0].read()
    assert img.shape == (48, 48, 3) and mask.shape == (48, 48)
    # a second run finds the files complete and does not fetch again
    n = len(server.requests)
    assert {r.status for r in download(tmp_path / "dl", [base], progress=False)} == {"present"}
    assert len(server.requests) == n


def test_resume_from_partial(served, tmp_path):
    server, base, root = served
    out = tmp_path / "dl"
    out.mkdir()
    data = (root / VAIHINGEN_GT_ZIP).read_bytes()
    (out / f"{VAIHINGEN_GT_ZIP}.part").write_bytes(data[:1000])
    digest = _sha(root / VAIHINGEN_GT_ZIP)
    server.requests.clear()
    (r,) = download(out, [base + VAIHINGEN_GT_ZIP], sha256={VAIHINGEN_GT_ZIP: digest}, progress=False)
    assert r.resumed_from == 1000 and r.verified and r.status == "downloaded"
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert (out / VAIHINGEN_GT_ZIP).read_bytes() == data
    assert not (out / f"{VAIHINGEN_GT_ZIP}.part").exists()


def test_complete_part_is_finished_without_body(served, tmp_path):
    server, base, root = served
    out = tmp_path / "dl"
    out.mkdir()
    data = (root / VAIHINGEN_ZIP).read_bytes()
    (out / f"{VAIHINGEN_ZIP}.part").write_bytes(data)
    (r,) = download(out, [base + VAIHINGEN_ZIP], progress=False)
    assert r.resumed_from == len(data) and (out / VAIHINGEN_ZIP).read_bytes() == data


def test_checksum_mismatch(served, tmp_path):
    _, base, _ = served
    bad = "0" * 64
    with pytest.raises(SegweakError, match=rf"SHA-256 is [0-9a-f]{{64}}, expected {bad}"):
        download(tmp_path / "dl", [base + VAIHINGEN_GT_ZIP], sha256={VAIHINGEN_GT_ZIP: bad}, progress=False)
    assert not (tmp_path / "dl" / VAIHINGEN_GT_ZIP).exists()
    assert not (tmp_path / "dl" / f"{VAIHINGEN_GT_ZIP}.part").exists()


def test_auth_and_404(served, tmp_path):
    server, base, _ = served
    server.auth = "Basic " + base64.b64encode(b"me:secret").decode()
    try:
        with pytest.raises(SegweakError, match="--user and --password"):
            download(tmp_path / "a", [base + VAIHINGEN_ZIP], progress=False)
        (r,) = download(tmp_path / "a", [base + VAIHINGEN_ZIP], user="me", password="secret", progress=False)
        assert r.status == "downloaded"
    finally:
        server.auth = None
    with pytest.raises(SegweakError, match="404.*--url"):
        download(tmp_path / "b", [base + "nothing.zip"], progress=False)
    # an optional archive that is missing on the server is skipped, not an error
    sub = base + "nosuchdir/"
    with pytest.raises(SegweakError, match="404"):
        download(tmp_path / "c", [sub], progress=False)


def test_optional_eroded_missing(served, tmp_path):
    server, base, root = served
    other = tmp_path / "srvroot"
    other.mkdir()
    for n in (VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP):
        (other / n).write_bytes((root / n).read_bytes())
    server.root = other
    try:
        res = download(tmp_path / "dl", [base], progress=False)
    finally:
        server.root = root
    assert [r.status for r in res] == ["downloaded", "downloaded", "missing"]


def test_argument_parsing():
    assert parse_sha256(["a.zip=" + "AB" * 32]) == {"a.zip": "ab" * 32}
    with pytest.raises(SegweakError, match="NAME=HEX"):
        parse_sha256(["a.zip=xyz"])
    with pytest.raises(SegweakError, match="--url"):
        resolve_urls([])
    with pytest.raises(SegweakError, match="http"):
        resolve_urls(["ftp://x/y.zip"])
    plan = resolve_urls(["https://h/data"])
    assert [p[1] for p in plan][0] == f"https://h/data/{VAIHINGEN_ZIP}" and [p[2] for p in plan] == [
        True,
        True,
        False,
    ]
    with pytest.raises(SegweakError, match="both --user"):
        download("/nonexistent", ["https://h/a.zip"], user="u")
