"""Docs that run (issue 10, item 8): every ```python block of README.md and docs/**/*.md is
executed as written — its own imports, nothing defined for it — each in a fresh interpreter, in
an empty temporary directory, with ``MPLBACKEND=Agg``. A claim in the docs cannot drift from the
code.

A block that is deliberately not runnable (a fragment, a sketch of a user's own training loop)
must say so: put ``<!-- no-run -->`` (optionally ``<!-- no-run: why -->``) on the line before its
fence. There should be almost none. A block whose import of an *optional* package (timm,
torchvision, lightning, transformers, …) fails is skipped, so a core-only install still passes;
any other failure fails the test with the block's output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: Top-level packages a block may need that are not core dependencies of unimix.
OPTIONAL_PACKAGES = frozenset(
    {
        "accelerate",
        "datasets",
        "lightning",
        "matplotlib",
        "PIL",
        "pytorch_lightning",
        "scipy",
        "sklearn",
        "tensorboard",
        "timm",
        "torchvision",
        "tqdm",
        "transformers",
        "yaml",
    }
)

# An opening fence: up to 3 spaces, 3+ backticks or tildes, an info string (no backtick after a
# backtick fence: "```` ```python ````" at the start of a line is inline code, not a fence).
_FENCE = re.compile(
    r"^(?P<indent> {0,3})(?:(?P<ticks>`{3,})(?=[^`]*$)|(?P<tildes>~{3,}))[ \t]*(?P<info>\S*)"
)
_NO_RUN = re.compile(r"^\s*<!--\s*no-run\b(?P<why>[^>]*)-->\s*$")
_MISSING = re.compile(r"ModuleNotFoundError: No module named '(?P<name>[^']+)'")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    no_run: str | None  # the reason given by a preceding <!-- no-run --> marker, else None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced code block of ``path`` with its language, first line and no-run marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["ticks"] or opening["tildes"], len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            mark = closing and (closing["ticks"] or closing["tildes"])
            if mark and mark[0] == fence[0] and len(mark) >= len(fence) and not closing["info"]:
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _NO_RUN.match(lines[k]) if k >= 0 else None
        blocks.append(
            Block(
                path=path,
                line=i + 1,
                language=opening["info"].lower(),
                code="\n".join(body) + "\n",
                no_run=(marker["why"].strip(" :") or "marked no-run") if marker else None,
            )
        )
        i = j + 1
    return blocks


PYTHON_BLOCKS = [
    b for path in DOC_FILES for b in extract_blocks(path) if b.language in {"python", "py"}
]


def test_the_docs_have_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 3
    # "almost none" are exempt: a fragment must be the exception, not the habit.
    exempt = [b.id for b in PYTHON_BLOCKS if b.no_run is not None]
    assert len(exempt) <= max(1, len(PYTHON_BLOCKS) // 5), exempt


def test_extract_blocks_reads_fences_and_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```python\nx = 1\n```\n\n<!-- no-run: a fragment -->\n\n```py\ny\n```\n"
        "```` ```python ```` is inline code\n"
        "````markdown\n```python\nnot a block\n```\n````\n~~~bash\nls\n~~~\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(doc)
    assert [(b.line, b.language, b.no_run) for b in blocks] == [
        (2, "python", None),
        (8, "py", "a fragment"),
        (12, "markdown", None),
        (17, "bash", None),
    ]
    assert blocks[0].code == "x = 1\n" and blocks[2].code == "```python\nnot a block\n```\n"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.no_run is not None:
        pytest.skip(f"{block.id}: <!-- no-run --> ({block.no_run})")
    script = tmp_path / "block.py"
    # Line numbers in a traceback are the Markdown file's own.
    script.write_text("\n" * block.line + block.code, encoding="utf-8")
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONHASHSEED": "0",
    }
    env.pop("PYTHONSTARTUP", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode == 0:
        return
    missing = _MISSING.search(done.stderr)
    if missing is not None and missing["name"].split(".")[0] in OPTIONAL_PACKAGES:
        pytest.skip(f"{block.id} needs the optional package {missing['name']!r}")
    pytest.fail(
        f"the ```python block at {block.id} fails as written (exit {done.returncode}):\n"
        f"{block.code}\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n"
        f"{done.stderr[-6000:]}",
        pytrace=False,
    )
