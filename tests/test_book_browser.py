"""Open the built book in headless Chromium: every chapter renders, its images resolve, and no
cell output shows an error. Skipped when the book is not built or Chromium is missing, unless
FSDIAG_REQUIRE_BROWSER=1 (then those are failures). Build first: jupyter-book build . -W -n"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
REQUIRED = os.environ.get("FSDIAG_REQUIRE_BROWSER") == "1"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
ERROR_CLASSES = {"output_error", "stderr", "traceback"}


def _toc_pages() -> list[str]:
    """The documents of _toc.yml in order (root first), without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(p).with_suffix("")) for p in pages]


PAGES = _toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if p.startswith("notebooks/")]


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"FSDIAG_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe is None:
        _unavailable("chromium is not installed (apt-get install -y chromium)")
    return exe


@pytest.fixture(scope="module")
def built() -> Path:
    if not (HTML / "index.html").exists():
        _unavailable(f"the book is not built ({HTML / 'index.html'} is missing)")
    return HTML


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


class _Page(HTMLParser):
    """Collects every <img> source, those inside the article (not the theme's header buttons),
    the body text, and the text inside error-looking output elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.article_images: list[str] = []
        self.text: list[str] = []
        self.flagged: list[str] = []
        self._stack: list[tuple[str, bool, bool]] = []   # (tag, error-looking, article)
        self._skip = 0   # inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        in_article = any(art for _, _, art in self._stack)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
            if in_article:
                self.article_images.append(attrs.get("src") or "")
        if tag in VOID:
            return
        self._stack.append((tag, bool(classes & ERROR_CLASSES), tag == "article" or "bd-article" in classes))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        while self._stack:
            t, _, _ = self._stack.pop()
            if t in ("script", "style"):
                self._skip -= 1
            if t == tag:
                break

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if any(flag for _, flag, _ in self._stack):
            self.flagged.append(data)


def _resolve(page_file: Path, src: str) -> Path | None:
    """The local file an <img src> points to (None for data: URIs)."""
    url = urlparse(src)
    if url.scheme == "data":
        return None
    if url.scheme == "file":
        return Path(unquote(url.path))
    if url.scheme or src.startswith("//"):
        raise AssertionError(f"{page_file.name}: image {src!r} is not local")
    return (page_file.parent / unquote(url.path)).resolve()


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_errors(page, chromium, built, tmp_path):
    page_file = built / f"{page}.html"
    assert page_file.exists(), f"{page}: no built page {page_file}"
    res = _run_chromium(chromium, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom",
                        page_file.as_uri())
    assert res.returncode == 0 and "</html>" in res.stdout, f"{page}: chromium failed: {res.stderr[-2000:]}"
    dom = _Page()
    dom.feed(res.stdout)
    text = "".join(dom.text)
    assert "Traceback" not in text, f"{page}: a cell output shows a traceback"
    flagged = "".join(dom.flagged)
    assert "Error" not in flagged, f"{page}: an error/stderr output mentions an Error: {flagged[:500]!r}"
    root = built.resolve()
    for src in dom.images:
        assert src, f"{page}: an <img> without src"
        target = _resolve(page_file, src)
        if target is None:
            continue
        assert target.is_file(), f"{page}: image {src!r} does not resolve ({target})"
        assert root in target.parents, f"{page}: image {src!r} lies outside _build/html"
    if page in NOTEBOOK_PAGES:
        assert dom.article_images, f"{page}: a chapter without a single figure"


@pytest.mark.browser
@pytest.mark.parametrize("page", [PAGES[0]] + NOTEBOOK_PAGES[:1])
def test_screenshot(page, chromium, built, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{Path(page).name}.png"
    shot.unlink(missing_ok=True)
    res = _run_chromium(chromium, tmp_path / "profile", "--virtual-time-budget=5000", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1280,2000", (built / f"{page}.html").as_uri())
    assert res.returncode == 0, f"{page}: chromium failed: {res.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{page}: empty screenshot {shot}"


# What a page loads (not what it links to): scripts, stylesheets, fonts, images, frames.
_LOADS = re.compile(r"<(script|img|iframe)\b[^>]*\bsrc=\"([^\"]+)\"|<link\b([^>]*)>", re.I)


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_page_loads_nothing_from_the_network(page, built):
    html = (built / f"{page}.html").read_text()
    remote = []
    for tag, src, link in _LOADS.findall(html):
        if link:
            rel = re.search(r"rel=\"([^\"]*)\"", link)
            href = re.search(r"href=\"([^\"]*)\"", link)
            if rel and href and set(rel.group(1).split()) & {"stylesheet", "preload", "icon", "modulepreload"}:
                src = href.group(1)
            else:
                continue
        if re.match(r"(https?:)?//", src):
            remote.append(src)
    assert not remote, f"{page}: loads {remote} from the network"
    assert "github.com/fsdiag" not in html, f"{page}: links to a repository that does not exist"


@pytest.mark.browser
@pytest.mark.parametrize("page", ["book/fsr_math"] + [p for p in NOTEBOOK_PAGES if "05_" in p])
def test_math_renders_with_the_network_off(page, chromium, built, tmp_path):
    # Every request off this machine goes to a closed local port: only the site's own files load.
    res = _run_chromium(chromium, tmp_path / "profile", "--proxy-server=http://127.0.0.1:9",
                        "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=15000", "--dump-dom",
                        (built / f"{page}.html").as_uri())
    assert res.returncode == 0 and "</html>" in res.stdout, f"{page}: chromium failed: {res.stderr[-2000:]}"
    assert "<mjx-container" in res.stdout, f"{page}: MathJax rendered nothing offline"
    dom = _Page()
    dom.feed(res.stdout)
    visible = "".join(dom.text)
    for raw in ("\\(", "\\[", "$$"):
        assert raw not in visible, f"{page}: raw TeX {raw!r} left in the visible text"
