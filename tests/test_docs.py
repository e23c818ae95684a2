"""The README's and the docs' Python examples run as written, each in a fresh directory.

A block that names files the text makes first runs where those files exist, built here
cheaply and never taken from the machine: ``tig-batch-quickstart/`` (the README's main
command, with ``--fast``) and ``real-bundle`` (performance.md's exported demo models; here
the fast quickstart's bundle).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS_QUICKSTART = ("tig-batch-quickstart", "real-bundle")


def _blocks() -> list:
    blocks = []
    for path in PAGES:
        for n, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
            slow = any(name in code for name in NEEDS_QUICKSTART)
            marks = [pytest.mark.slow] if slow else []
            blocks.append(pytest.param(code, slow, id=f"{path.name}:{n}", marks=marks))
    return blocks


@pytest.mark.parametrize(("code", "needs_quickstart"), _blocks())
def test_python_blocks_run(
    code: str, needs_quickstart: bool, request: pytest.FixtureRequest, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if needs_quickstart:
        root, _ = request.getfixturevalue("fast_quickstart")
        (tmp_path / "tig-batch-quickstart").symlink_to(root / "tig-batch-quickstart")
        record = json.loads((root / "tig-batch-quickstart" / "quickstart.json").read_text())
        (tmp_path / "real-bundle").symlink_to(record["bundle"])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs>", "exec"), {})


def test_every_page_with_python_is_checked() -> None:
    assert {p.split(":")[0] for p in (b.id for b in _blocks())} >= {"README.md", "api.md"}
