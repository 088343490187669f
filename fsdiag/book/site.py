"""`fsdiag book --from DIR`: the website built from the executed notebooks of a regeneration
run (nothing is executed); chapters without a finished run are left out of the table of contents."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ..outputs import Target
from .regenerate import BOOK_OWNER, REPO

__all__ = ["build_book_from"]


# ------------------------------------------------------------------ the book from a batch
def _pick(runs_dir: Path, notebook: str) -> Path | None:
    """The executed notebook of a finished run: the lowest seed, then the first key (failed runs,
    staging folders and runs without their notebook are passed over)."""
    best = None
    folder = runs_dir / notebook
    if not folder.is_dir():
        return None
    for run_dir in sorted(folder.iterdir()):
        executed = run_dir / f"{notebook}.ipynb"
        if run_dir.name.startswith(".") or run_dir.name.endswith(".failed") or not executed.is_file():
            continue
        try:
            row = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(row, dict) or row.get("status") != "done":
            continue
        seed = (row.get("params") or {}).get("seed", 0)
        rank = (seed if isinstance(seed, (int, float)) else 0, run_dir.name)
        if best is None or rank < best[0]:
            best = (rank, executed)
    return None if best is None else best[1]


def _page_notebook(executed: Path, dest: Path, chapter: str) -> None:
    """Copy an executed notebook for the book, its injected `out_dir` (the run's staging folder, gone
    by now) replaced by where the page finds the run's data: outputs/<chapter>/ beside it."""
    nb = json.loads(executed.read_text())
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            lines = "".join(cell.get("source", "")).splitlines(keepends=True)
            cell["source"] = [f'out_dir = "outputs/{chapter}"  # this run\'s outputs, beside this page\n'
                              if line.startswith("out_dir = ") else line for line in lines]
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def build_book_from(runs_dir, *, site=None, repo: Path = REPO, strict: bool = True, stream=None) -> Path:
    """Build the website from the executed notebooks of a regeneration run (nothing is executed):
    chapters missing from the run are left out of the table of contents. Returns the site folder.

    The site (default DIR/_site) follows fsdiag.outputs' rule: a new or empty folder, or one an
    earlier `fsdiag book` wrote; it is built in a staging folder beside it (the book's source
    included) and swapped in whole. Raises ValueError (OutputError for --site) for a request that
    cannot be built, before building; RuntimeError when jupyter-book fails."""
    import subprocess

    import yaml
    stream = sys.stdout if stream is None else stream
    if not isinstance(runs_dir, (str, os.PathLike)) or not str(os.fspath(runs_dir)).strip():
        raise ValueError(f"--from: expected a folder, got {runs_dir!r}")
    runs_dir = Path(os.path.abspath(os.path.expanduser(os.fspath(runs_dir))))
    if not runs_dir.is_dir():
        raise ValueError(f"--from: no folder {runs_dir}")
    repo = Path(repo)
    if not (repo / "_toc.yml").is_file():
        raise ValueError(f"the book's sources are missing: no {repo / '_toc.yml'} (a broken fsdiag install?)")
    toc = yaml.safe_load((repo / "_toc.yml").read_text())
    used, missing, picked = [], [], {}
    for part in toc.get("parts", []):
        kept = []
        for ch in part.get("chapters", []):
            f = ch["file"]
            if not f.startswith("notebooks/"):
                kept.append(ch)
                continue
            executed = _pick(runs_dir, Path(f).name)
            if executed is None:
                missing.append(Path(f).name)
                continue
            picked[Path(f).name] = executed
            used.append(Path(f).name)
            kept.append(ch)
        part["chapters"] = kept
    toc["parts"] = [p for p in toc.get("parts", []) if p["chapters"]]
    if not used:
        raise ValueError(f"--from: no finished runs of any chapter in {runs_dir}")
    site_given = site is not None
    target = Target(site if site_given else runs_dir / "_site", owner=BOOK_OWNER, option="--site", override=None)
    stage = target.stage()
    try:
        src = stage / ".source"                           # the book's source, inside the site's staging
        src.mkdir()
        for item in ("_config.yml", "references.bib", "book"):
            (shutil.copytree if (repo / item).is_dir() else shutil.copy2)(repo / item, src / item)
        (src / "notebooks").mkdir()
        for name, executed in picked.items():
            _page_notebook(executed, src / "notebooks" / f"{name}.ipynb", name)
            # The run's figures and data beside the page, where its captions' "data:" links point
            # (outputs/<chapter>/, as in `make book`; nbtools.figure_caption under regenerate).
            data = src / "notebooks" / "outputs" / name
            data.mkdir(parents=True)
            for f in sorted((executed.parent / "outputs").glob("*")):
                if f.is_file() and f.suffix in (".png", ".csv", ".json"):
                    shutil.copy2(f, data / f.name)
        (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
        config = yaml.safe_load((src / "_config.yml").read_text())
        config.setdefault("execute", {})["execute_notebooks"] = "off"
        (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        # jupyter-book 1.x has no `python -m` entry; call its click command in this interpreter.
        cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src),
               "--path-output", str(src)]
        # Warnings are errors as in `make book`, unless chapters are missing: links to them then warn.
        if strict and not missing:
            cmd += ["-W", "-n", "--keep-going"]
        print(f"building the book from {len(used)} executed chapters in {runs_dir}"
              + (f" (left out, no finished run: {', '.join(missing)})" if missing else ""), file=stream)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=src)
        html = src / "_build" / "html"
        if res.returncode != 0 or not (html / "index.html").is_file():
            raise RuntimeError(f"jupyter-book build failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
        for entry in html.iterdir():
            os.replace(entry, stage / entry.name)
        shutil.rmtree(src)
        site = target.publish(stage)
        print(f"site written to {site}/index.html", file=stream)
        return site
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
