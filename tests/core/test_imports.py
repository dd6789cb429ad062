from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import chio_middleware.core
allowed_roots = {"chio_middleware", "pydantic", "pydantic_core", "nacl", "typing_extensions",
                 "annotated_types", "typing_inspection", "_cffi_backend", "_sodium",
                 "_distutils_hack",  # libsodium binding; setuptools path hook
                 "ada_url", "re2"}  # WHATWG URL parser, linear-time regexes (PROTOCOL.md 5.2)
third_party = {
    name.split(".")[0] for name, module in sys.modules.items()
    if module is not None and getattr(module, "__file__", None)
    and "site-packages" in (module.__file__ or "")
    and not name.startswith("__editable__")  # pip's editable-install finder
}
print(sorted(third_party - allowed_roots))
print("starlette" in sys.modules, "structlog" in sys.modules, "flask" in sys.modules)
"""


def test_importing_the_core_imports_no_web_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "False False False"], out
