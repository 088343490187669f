import contextlib
import json
import math
import operator
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Always the CPU; CUDA too when present."""
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def run_notebook(name: str, tmp_path: Path, **params) -> dict:
    """Execute notebooks/<name> with papermill and the given parameters; return its metrics.json."""
    import papermill as pm
    out_dir = tmp_path / "out"
    pm.execute_notebook(str(ROOT / "notebooks" / name), str(tmp_path / name),
                        parameters={"out_dir": str(out_dir), **params},
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    # The outputs were moved into place whole: no staging folder or old copy is left beside them.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return json.loads((out_dir / "metrics.json").read_text())


# One Jupyter kernel serves every rejected-parameter check of a test session: a kernel start and
# the chapters' imports cost ~4 s per check under papermill, a check itself ~0.3 s. Each check
# clears the namespace and the input history (which book.check_params reads to find the
# injected names) before it runs the chapter's cells as papermill would have arranged them.
_VALIDATION = contextlib.ExitStack()
_CLEAN_SLATE = ("%reset -f\nget_ipython().history_manager.input_hist_parsed.clear()\n"
                "get_ipython().history_manager.input_hist_raw.clear()\n")


def _validation_client(nb):
    from nbclient import NotebookClient
    client = getattr(_validation_client, "client", None)
    if client is None:
        client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}})
        _VALIDATION.enter_context(client.setup_kernel())
        _validation_client.client = client
    client.nb = nb
    return client


def pytest_sessionfinish(session, exitstatus):
    _VALIDATION.close()


def assert_rejected(name: str, tmp_path: Path, bad: dict, match: str, error: str = "ValueError", cell: int = 3):
    """notebooks/<name> with a bad parameter must fail with `error` naming `match` in the
    validation cell (the `cell`-th executed: parameters, papermill's injected cell, validation)
    and write nothing. The cells run as papermill arranges them (its own parameterize_notebook),
    in the session's shared kernel."""
    import papermill as pm
    from nbclient.exceptions import CellExecutionError
    from papermill.parameterize import parameterize_notebook
    nb = parameterize_notebook(pm.iorw.load_notebook_node(str(ROOT / "notebooks" / name)),
                               {"out_dir": str(tmp_path / "out"), **bad}, kernel_name="python3", language="python")
    client = _validation_client(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].source = _CLEAN_SLATE + code[0].source
    for count, c in enumerate(code[:cell], 1):
        try:
            client.execute_cell(c, nb.cells.index(c))
        except CellExecutionError as err:
            assert (err.ename, count) == (error, cell), f"{err.ename}: {err.evalue}"
            assert re.search(match, f"{err.ename}: {err.evalue}"), f"{err.ename}: {err.evalue}"
            break
    else:
        raise AssertionError(f"{name} accepted {bad}: no error in its first {cell} cells")
    assert not (tmp_path / "out").exists()


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def check_verdict(verdict: dict, statuses=None) -> None:
    """A chapter's verdict (book.verdict) is consistent: every evidence row's `holds` is
    `value op threshold`, the status follows from the rows, and it is one of `statuses`."""
    rows = verdict["evidence"]
    assert rows and verdict["claim"], verdict
    for r in rows:
        assert r["op"] in _OPS, r
        assert r["holds"] == (math.isfinite(r["value"]) and _OPS[r["op"]](r["value"], r["threshold"])), r
    n = sum(r["holds"] for r in rows)
    assert verdict["status"] == ("supported" if n == len(rows) else "not reproduced" if n == 0 else "partly supported")
    if statuses is not None:
        assert verdict["status"] in statuses, verdict


def check_page_outputs(path: Path, name: str, figures: list[str]) -> None:
    """A chapter run by run_notebook into `path`: its figures are exactly `figures` (PNG stems),
    each at most 12 in wide at the saved 150 dpi, and no output prints a raw 16-digit float."""
    import re
    import struct
    pngs = sorted((path / "out").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(figures)
    for p in pngs:   # bbox "tight" may trim a figure, never widen it much
        assert struct.unpack(">I", p.read_bytes()[16:20])[0] <= 12 * 150, p.name
    nb = json.loads((path / name).read_text())
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
            assert not re.search(r"\d\.\d{7,}", text), text[:300]
