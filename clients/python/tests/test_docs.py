"""The examples of docs/python.md run as written, against the test server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[3] / "docs" / "python.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_an_example_runs(server: str, example: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = example.replace("http://localhost:12345", server)
    exec(compile(code, str(DOCS), "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out, "the example printed nothing"
