"""The quick-start notebook runs top to bottom and shows its report and figures."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    # the kernel inherits this process's environment: few epochs, and adlight importable
    # from a source checkout as well as from an installed package
    monkeypatch.setenv("ADLIGHT_NOTEBOOK_EPOCHS", "3")
    pythonpath = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(pythonpath))
    # one torch thread in the kernel: with other tests (or xdist workers) on the same cores,
    # a second spinning thread pool makes the run several times slower, not faster
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # metadata.path is the kernel's working directory: runs/ lands in tmp_path, not the repo
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, errors
    pngs = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pngs) >= 3
    text = "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs
    )
    assert "image_AUROC" in text
    assert list(tmp_path.glob("runs/notebook/**/metrics.json"))
