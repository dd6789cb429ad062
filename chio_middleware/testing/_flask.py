"""A Flask test client that signs every request (Flask's client takes no httpx auth)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from ..client.credentials import (
    NONCE_HEADER,
    ChioCredentials,
    _challenge_nonce,
)

__all__ = ["ChioFlaskClient"]


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class ChioFlaskClient:
    """Wraps ``app.test_client()``: the capability and a fresh DPoP proof on every request.

    ``get``/``post``/``put``/``patch``/``delete``/``head``/``options``/``open`` take what
    Flask's test client takes (``json=``, ``data=``, ``headers=``, ``query_string=``...).
    The proof is bound to the exact bytes Werkzeug builds. A 428 execution-nonce challenge
    is answered once, with the nonce and a new proof. A receipt in the response must verify
    (when the kit has a kernel key) and is then ``response.chio_receipt``. Anything else
    (``with client:``, cookies, ``session_transaction``) is the wrapped client's.
    """

    def __init__(self, client: Any, credentials: ChioCredentials) -> None:
        #: The wrapped ``FlaskClient``.
        self.client = client
        self.credentials = credentials

    def __repr__(self) -> str:
        return f"ChioFlaskClient({self.credentials!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __enter__(self) -> ChioFlaskClient:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def open(
        self, *args: Any, buffered: bool = False, follow_redirects: bool = False, **kwargs: Any
    ) -> Any:
        """Build the request as Flask's client would, sign it, send it, answer a 428."""
        from flask.testing import EnvironBuilder
        from werkzeug.wrappers import Request

        builder = EnvironBuilder(self.client.application, *args, **kwargs)
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        body = environ["wsgi.input"].read()
        method = str(environ["REQUEST_METHOD"])
        # Werkzeug leaves a query given as query_string= out of REQUEST_URI; the server reads
        # QUERY_STRING, so the proof binds that.
        raw_path = str(environ["REQUEST_URI"]).partition("?")[0]
        query = str(environ.get("QUERY_STRING", ""))
        target = (raw_path + ("?" + query if query else "")).encode("latin-1").decode("utf-8")

        def send(nonce: str | None) -> Any:
            prepared = dict(environ)
            prepared["wsgi.input"] = BytesIO(body)
            signed = self.credentials.sign(method, target, body, execution_nonce=nonce)
            for header, value in signed.items():
                prepared[_environ_key(header)] = value
            response = self.client.open(
                Request(prepared), buffered=buffered, follow_redirects=follow_redirects
            )
            response.chio_receipt = None
            if response.headers.get("X-Chio-Receipt") is not None:
                response.chio_receipt = self.credentials.check_response(
                    response.headers, method=method, target=target, body=body
                )
            return response, bool(signed)

        response, signed = send(None)
        nonce = _challenge_nonce(response.status_code, response.headers.getlist(NONCE_HEADER))
        if signed and nonce is not None:
            response.close()
            response, _ = send(nonce)
        return response

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """A GET request (see :meth:`open`)."""
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        """A POST request (see :meth:`open`)."""
        return self.open(*args, method="POST", **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        """A PUT request (see :meth:`open`)."""
        return self.open(*args, method="PUT", **kwargs)

    def patch(self, *args: Any, **kwargs: Any) -> Any:
        """A PATCH request (see :meth:`open`)."""
        return self.open(*args, method="PATCH", **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        """A DELETE request (see :meth:`open`)."""
        return self.open(*args, method="DELETE", **kwargs)

    def head(self, *args: Any, **kwargs: Any) -> Any:
        """A HEAD request (see :meth:`open`)."""
        return self.open(*args, method="HEAD", **kwargs)

    def options(self, *args: Any, **kwargs: Any) -> Any:
        """An OPTIONS request (see :meth:`open`)."""
        return self.open(*args, method="OPTIONS", **kwargs)
