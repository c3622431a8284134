"""Report stage: execute the report notebook with papermill, render it to offline HTML.

The HTML must open without a network: images are embedded (inline PNG outputs), and
the template's CDN scripts (require.js, MathJax, mermaid, widget manager) are removed;
the notebook uses neither LaTeX nor widgets, so nothing is lost.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from llm4dsr.io import Llm4dsrError, write_text

log = logging.getLogger(__name__)

# The lab template without its network scripts.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
REMOTE_SCRIPT = re.compile(r"""<script[^>]*\ssrc=["']?(https?:)?//|import\(\s*["'](https?:)?//""", re.I)


def report_files(dataset: str, noises: list[str], detectors: list[str], main_noise: str, sweep: bool,
                 trained_on: str, results: str = "results") -> dict:
    """Every workflow output the report notebook reads, by role (and noise setting, detector);
    the LoRA loss and learning curve of the denoiser fine-tuned on ``trained_on``'s windows.

    Rule report declares exactly these as its inputs and hands this mapping to the
    notebook as its ``inputs`` parameter: the notebook builds no path itself.
    """
    top = f"{results}/{dataset}"
    files = {
        "stats": f"{top}/data/stats.json",
        "catalogue": f"{top}/data/items.parquet",
        "loss": f"{top}/finetune/{trained_on}/loss.tsv",
        "curve": f"{top}/finetune/{trained_on}/learning_curve.tsv",
        "detection": {n: f"{top}/{n}/detection.json" for n in noises},
        "results": {n: f"{top}/{n}/results.csv" for n in noises},
        "units": {n: f"{top}/{n}/units.parquet" for n in noises},
        "scores": {n: {d: f"{top}/{n}/scores/{d}.parquet" for d in detectors} for n in noises},
        "changes": f"{top}/{main_noise}/correct/llm4dsr/changes.parquet",
    }
    if sweep:
        files["sweep"] = f"{top}/{main_noise}/sweep.csv"
    return files


def flat_files(files: dict) -> dict[str, str | list[str]]:
    """report_files() as Snakemake inputs: one path or a list of paths per role."""
    def leaves(value):
        return [p for v in value.values() for p in leaves(v)] if isinstance(value, dict) else [value]

    return {key: value if isinstance(value, str) else leaves(value) for key, value in files.items()}


def to_html(notebook: str | Path, code: bool = False) -> str:
    """The executed notebook as one self-contained HTML page: text, tables and figures
    only, or (``code``) with every code cell too."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    hide = {} if code else {"exclude_input": True, "exclude_input_prompt": True, "exclude_output_prompt": True}
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"offline.j2": OFFLINE_TEMPLATE})],
                            template_file="offline.j2", embed_images=True, **hide)
    html, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    check_offline(html, str(notebook))
    return html


def check_offline(html: str, name: str = "report.html") -> None:
    """Raise if the page would fetch a script from the network."""
    hit = REMOTE_SCRIPT.search(html)
    if hit:
        raise Llm4dsrError(f"{name}: the HTML loads a remote script ({html[hit.start():hit.start() + 80]!r})")


def run(notebook: str | Path, out_notebook: str | Path, out_html: str | Path, parameters: Mapping[str, Any],
        figures_dir: str | Path, kernel: str = "python3", cwd: str | Path | None = None,
        out_code_html: str | Path | None = None) -> None:
    """Execute ``notebook`` with ``parameters`` (plus figures_dir), write it and its HTML
    (for readers: no code), and, with ``out_code_html``, the HTML with the code.

    A failing cell raises papermill's PapermillExecutionError after the partly executed
    notebook is written to ``out_notebook``, so the traceback can be read there.
    """
    import papermill as pm

    figures_dir = Path(figures_dir)
    if figures_dir.exists():
        shutil.rmtree(figures_dir)  # no stale figures from an earlier configuration
    figures_dir.mkdir(parents=True)
    params = {**parameters, "figures_dir": str(figures_dir)}
    log.info("executing %s with %s", notebook, params)
    # the kernel spec "python3" runs the interpreter running this code (jupyter_client
    # swaps a bare "python" for sys.executable), so the kernel sees the llm4dsr package
    pm.execute_notebook(str(notebook), str(out_notebook), parameters=params, kernel_name=kernel,
                        cwd=str(cwd) if cwd else None, progress_bar=False, log_output=False)
    write_text(to_html(out_notebook), out_html)
    if out_code_html:
        write_text(to_html(out_notebook, code=True), out_code_html)
    log.info("wrote %s, %s and %d figures", out_notebook, out_html, len(list(figures_dir.glob("*.png"))))
