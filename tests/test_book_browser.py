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


# --- Layout, measured in the browser at a common laptop width -------------------------------------
# A figure is legible when matplotlib's default 10-pt text renders at >= 8 CSS px: a PNG saved at
# `dpi` and drawn `w` CSS px wide for its `n` pixels shows 10-pt text at 10 / 72 * dpi * w / n px.
WINDOW = (1280, 2000)
MIN_TEXT_PX = 8.0
_PROBE = """<script>
function fsdiagProbe() {
  const figs = [...document.querySelectorAll('article .cell_output img')].map(i =>
    [i.getAttribute('src'), i.naturalWidth, i.getBoundingClientRect().width]);
  const eqs = [...document.querySelectorAll('mjx-container[display="true"]')].map(m =>
    [m.scrollWidth, m.parentElement.getBoundingClientRect().width, (m.textContent || '').slice(0, 60)]);
  const code = [...document.querySelectorAll('article .cell_input pre')].map(c =>
    [c.scrollWidth, c.clientWidth, (c.textContent || '').split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 60)]);
  const p = document.createElement('pre');
  p.id = 'fsdiag-layout';
  p.textContent = JSON.stringify({figs: figs, eqs: eqs, code: code});
  document.body.appendChild(p);
}
window.addEventListener('load', () => {
  const ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
  (ready || Promise.resolve()).then(fsdiagProbe);
});
</script>"""


def _layout(page: str, exe: str, built: Path, tmp_path: Path) -> dict:
    """Figures (src, natural width, rendered width) and display equations (scroll width, column
    width, text) of a built page, from a probe script run in a copy of the page beside it."""
    import json
    from html import unescape
    src = built / f"{page}.html"
    probe = src.with_name(f"_probe-{os.getpid()}-{src.name}")
    probe.write_text(src.read_text().replace("</body>", _PROBE + "</body>", 1))
    try:
        res = _run_chromium(exe, tmp_path / "profile", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                            "--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="fsdiag-layout"[^>]*>(.*?)</pre>', res.stdout, re.S)
    assert found, f"{page}: the layout probe did not run: {res.stderr[-1000:]}"
    return json.loads(unescape(found.group(1)))


def _png_dpi(path: Path) -> float:
    from PIL import Image
    with Image.open(path) as im:
        return float(im.info.get("dpi", (72.0, 72.0))[0])


def _text_px(dpi: float, natural: float, rendered: float) -> float:
    return 10.0 / 72.0 * dpi * rendered / natural


def test_text_px_rule():
    # A 12-inch figure at 100 dpi drawn 740 px wide: 10-pt text at 8.5 px (legible); an 18-inch
    # one in the same column: 5.7 px (the shrunk multi-panel figures the rule is there to catch).
    assert _text_px(100, 1200, 740) == pytest.approx(8.56, abs=0.01)
    assert _text_px(100, 1800, 740) < MIN_TEXT_PX <= _text_px(100, 1200, 740)


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_figures_legible_and_equations_fit(page, chromium, built, tmp_path):
    layout = _layout(page, chromium, built, tmp_path)
    page_file = built / f"{page}.html"
    small = []
    for src, natural, rendered in layout["figs"]:
        target = _resolve(page_file, src)
        if target is None or target.suffix.lower() != ".png" or not natural:
            continue
        px = _text_px(_png_dpi(target), natural, rendered)
        if px < MIN_TEXT_PX:
            small.append(f"{target.name}: {natural} px drawn at {rendered:.0f} px, 10-pt text at {px:.1f} px")
    assert not small, (f"{page}: figures shrunk below legibility at a {WINDOW[0]} px window "
                       f"(make them narrower or wrap panels into rows): {small}")
    wide = [f"{text!r}: {scroll} px in a {column:.0f} px column" for scroll, column, text in layout["eqs"]
            if scroll > column + 1]
    assert not wide, f"{page}: display equations wider than the column: {wide}"
    # Visible code is read, not scrolled: a long line wraps inside its box (book/_static/fsdiag.css).
    cut = [f"{text!r}...: {scroll} px in a {width} px box" for scroll, width, text in layout.get("code", [])
           if scroll > width + 1]
    assert not cut, f"{page}: code lines wider than their box (clipped or scrolled): {cut[:3]}"


def _labels(obj, out: set) -> set:
    """Short strings in a metrics.json (titles, labels, names): what a table or print may show."""
    if isinstance(obj, dict):
        for v in obj.values():
            _labels(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _labels(v, out)
    elif isinstance(obj, str) and 12 <= len(obj) <= 80 and len(obj.split()) <= 10:
        out.add(obj)
    return out


def truncated_labels(text: str, labels) -> list[str]:
    """Places where the text shows a label cut inside a word or number: a prefix of at least 12
    characters of the label, then a space or the end, where the label goes on with a letter or
    digit right after a letter, digit or '.' (e.g. "three atoms, y = -1." for "three atoms,
    y = -1.8, σ = 0.3")."""
    bad = []
    for label in labels:
        start = text.find(label[:12])
        while start >= 0:
            n = 12
            while n < len(label) and start + n < len(text) and text[start + n] == label[n]:
                n += 1
            end = start + n
            if (n < len(label) and (end == len(text) or text[end].isspace())
                    and label[n].isalnum() and (label[n - 1].isalnum() or label[n - 1] == ".")):
                bad.append(f"{text[start:end]!r} (of {label!r})")
            start = text.find(label[:12], start + 1)
    return bad


def test_truncated_labels_rule():
    label = "three atoms, y = -1.8, σ = 0.3"
    assert truncated_labels("three atoms, y = -1. σ-DPS  0.21", [label])
    assert truncated_labels("| three atoms, y = |", [label]) == []          # cut between words: fine
    assert truncated_labels("three atoms, y = -1.8, σ = 0.3 σ-DPS", [label]) == []
    assert truncated_labels("on three atoms, y = -1.8 the", [label]) == []  # a shorter phrase, whole
    assert truncated_labels("three ato", ["three atoms, y = 1"]) == []       # shorter than 12: not checked
    assert truncated_labels("the GMM atoms, y = 1, σ = 0.", ["the GMM atoms, y = 1, σ = 0.5"])


@pytest.mark.browser
@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_no_truncated_labels(page, built):
    import json
    metrics = ROOT / "notebooks" / "outputs" / Path(page).name / "metrics.json"
    if not metrics.exists():
        _unavailable(f"{metrics} is missing (the book's outputs are written by make book)")
    page_file = built / f"{page}.html"
    assert page_file.exists(), f"{page}: no built page {page_file}"
    dom = _Page()
    dom.feed(page_file.read_text())
    bad = truncated_labels("".join(dom.text), _labels(json.loads(metrics.read_text()), set()))
    assert not bad, f"{page}: labels cut short: {bad[:5]}"


# Text a reader should never see: a local path object, a run's staging folder, the outputs
# helper's "wrote ..." line (issue 17).
PLUMBING = re.compile(r"PosixPath\(|WindowsPath\(|\.staging-\d+|^wrote \S+\.(png|json|csv)", re.M)


def test_plumbing_rule():
    assert PLUMBING.search("PosixPath('/tmp/x/mode_masses.png')")
    assert PLUMBING.search("/runs/ci/05/.7b34.staging-4242-abc/outputs/a.csv")
    assert PLUMBING.search("wrote mode_masses.png, metrics.json to outputs/05")
    assert not PLUMBING.search("the staging area of a sampler; it wrote the paper")


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_no_plumbing_or_local_paths_on_the_page(page, built):
    dom = _Page()
    dom.feed((built / f"{page}.html").read_text())
    text = "".join(dom.text)
    found = PLUMBING.search(text)
    assert found is None, f"{page}: shows {text[max(0, found.start() - 60):found.end() + 60]!r}"
