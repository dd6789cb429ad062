"""The README's "Testing your app" section, run as written (each of its code blocks is here).

The three apps are ``readme_starlette``, ``readme_fastapi`` and ``readme_flask``; the test
below is the README's three lines, once per app.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import readme_fastapi, readme_flask, readme_starlette

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(params=[readme_starlette, readme_fastapi, readme_flask], ids=["starlette", "fastapi", "flask"])
def create_app(request: pytest.FixtureRequest) -> object:
    return request.param.create_app


# The README's test, verbatim (create_app is the fixture above, one app per framework).
from chio_middleware.testing import ChioTestKit  # noqa: E402


def test_write_note(create_app) -> None:
    kit = ChioTestKit(grants=["srv-notes:write_note"])
    client = kit.client(create_app(kit.settings()))
    assert client.post("/notes", json={"title": "t"}).status_code == 201


def test_every_code_block_of_the_section_is_tested_here() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Testing your app\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 4
    sources = "\n".join(path.read_text() for path in HERE.glob("*.py")).replace("  # noqa: E402", "")
    for block in blocks:
        code = block.replace("def test_write_note() -> None:", "def test_write_note(create_app) -> None:")
        assert code.strip() in sources, f"README block not tested as written:\n{block}"
