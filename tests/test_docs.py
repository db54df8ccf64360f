"""The documentation is built, not hand-copied: the site builds strict, and the CLI reference is complete.

`mkdocs build --strict` fails on a broken link or anchor, a page missing from the nav, a benchmark
table that the benchmarks page includes but nobody wrote (pymdownx.snippets with check_paths), and a
docstring that mkdocstrings cannot render. The CLI reference is generated from the click app, so every
command and every option's long flag must appear in it.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env_note = "the docs tools come with the test extra: pip install -e '.[test]' (make setup)"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    if "No module named mkdocs" in proc.stderr:
        pytest.fail(env_note)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def _text(path: Path) -> str:
    """The page's visible text: tags dropped, entities decoded."""
    raw = path.read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def _commands(cmd: click.Command, path: tuple[str, ...]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))


def test_docs_build_strict_with_every_page(site):
    nav_pages = [
        "index.html",
        "getting-started/index.html",
        "segmenting/index.html",
        "qgis/index.html",
        "deepness/index.html",
        "batch/index.html",
        "region-methods/index.html",
        "priors/index.html",
        "core/index.html",
        "cli/index.html",
        "api/index.html",
        "progress-jsonl/index.html",
        "troubleshooting/index.html",
        "method/index.html",
        "benchmarks/index.html",
        "provenance/index.html",
        "development/index.html",
    ]
    missing = [p for p in nav_pages if not (site / p).is_file()]
    assert not missing, f"pages missing from the built site: {missing}"
    # the API page really holds rendered docstrings, not just headings
    api = _text(site / "api" / "index.html")
    for name in ("geo_ppp.pipeline.segment", "plug_and_play", "export_onnx", "run_job"):
        assert name in api, f"{name} is not rendered on the API page"


def test_cli_reference_lists_every_command_and_option(site):
    from geo_ppp.cli.main import main

    text = _text(site / "cli" / "index.html")
    missing = []
    for path, cmd in _commands(main, ("geo-ppp",)):
        title = " ".join(path)
        if title not in text:
            missing.append(f"command {title!r}")
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and flag not in text:
                    missing.append(f"{title} {flag}")
    assert not missing, f"not in the built CLI reference: {missing}"


def test_benchmark_tables_are_included_and_say_their_command():
    tables = ROOT / "docs" / "benchmarks" / "tables"
    page = (ROOT / "docs" / "benchmarks" / "index.md").read_text()
    for table in sorted(tables.glob("*.md")):
        assert f"docs/benchmarks/tables/{table.name}" in page, f"{table.name} is not on the benchmarks page"
        head = "\n".join(table.read_text().splitlines()[:4])
        assert "`python benchmarks/" in head or "`geo-ppp " in head, (
            f"{table.name} does not start by naming the command that printed it"
        )


def test_markdown_option_writes_tables_command_and_date(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _markdown
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    printed = "prior: x\n| a | b |\n|---|---|\n| 1 | 2 |\n\nnote 1\nnote 2\n"
    cmd = _markdown.command_line(["benchmarks/x.py", "--n", "5", "--markdown", "out.md"])
    assert cmd == "python benchmarks/x.py --n 5"
    md = _markdown.to_markdown(printed, cmd, str(tmp_path / "t.md"), "2026-01-01 00:00 UTC", "")
    assert "`python benchmarks/x.py --n 5`" in md and "2026-01-01" in md
    assert "\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n" in md
    assert "```text\nprior: x\n```" in md and "```text\nnote 1\nnote 2\n```" in md


def test_readme_links_reach_built_pages_and_anchors(site):
    """The landing page's links to docs/ land on a page of the site, at an anchor that exists."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)(#[^)\s]+)?\)", readme)
    assert links, "the README links to no docs page"
    bad = []
    for target, anchor in links:
        if not (ROOT / target).exists():
            bad.append(f"{target} does not exist")
            continue
        if not target.endswith(".md"):
            continue
        rel = target.removeprefix("docs/").removesuffix(".md")
        page = site / (rel.removesuffix("index") if rel.endswith("index") else rel + "/") / "index.html"
        if not page.is_file():
            bad.append(f"{target} is not built ({page})")
        elif anchor and f'id="{anchor[1:]}"' not in page.read_text(encoding="utf-8"):
            bad.append(f"{target}{anchor}: no such anchor")
    assert not bad, bad
