"""Without the ``otel`` extra nothing of OpenTelemetry is imported, and nothing changes."""

from __future__ import annotations

import subprocess
import sys

BLOCK_OTEL = """
import sys

class NotInstalled:
    # Behaves as if the opentelemetry distributions were not installed.
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""

REQUEST = """
import io
import sys
from wsgiref.util import setup_testing_defaults
import chio_middleware, chio_middleware.asgi, chio_middleware.wsgi
from chio_middleware import ChioSettings
from chio_middleware.wsgi import ChioWSGIMiddleware

def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]

middleware = ChioWSGIMiddleware(app, settings=ChioSettings(receipt_sink="memory", signing_key="11" * 32, telemetry=MODE))
environ = {}
setup_testing_defaults(environ)
statuses = []
body = b"".join(middleware(environ, lambda status, headers, exc=None: statuses.append(status)))
print("=>", statuses[0], body.decode(), middleware.runtime.telemetry is None)
print("=>", sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))
"""


def _run(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return [line[3:] for line in done.stdout.splitlines() if line.startswith("=> ")]


def test_not_installed_nothing_is_imported_and_requests_work() -> None:
    out = _run(BLOCK_OTEL + REQUEST.replace("MODE", '"auto"'))
    assert out == ["200 OK ok True", "[]"]


def test_not_installed_and_required_is_a_clear_error() -> None:
    code = BLOCK_OTEL + REQUEST.replace("MODE", '"otel"')
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "telemetry='otel' needs OpenTelemetry: pip install 'chio-middleware[otel]'" in done.stderr


def test_installed_but_off_imports_nothing() -> None:
    assert _run(REQUEST.replace("MODE", '"off"')) == ["200 OK ok True", "[]"]


def test_importing_the_package_never_imports_opentelemetry() -> None:
    code = (
        "import sys, chio_middleware, chio_middleware.asgi, chio_middleware.wsgi, "
        "chio_middleware.cli, chio_middleware.telemetry\n"
        "print('=>', sorted(n for n in sys.modules if n.split('.')[0] == 'opentelemetry'))"
    )
    assert _run(code) == ["[]"]
