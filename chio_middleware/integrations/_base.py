"""What the framework integrations share: the constructor, its options, the declarations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.clock import Clock
from ..core.guards import Guard
from ..core.replay import ReplayStore
from ..runtime import DenialRenderer
from ..settings import ChioSettings
from ..sinks import ReceiptSink
from ._declare import public, tool

__all__ = ["ChioIntegration"]


class ChioIntegration:
    """``Chio(app=None, *, settings=..., clock=..., guards=..., store=..., sink=...,
    render_denial=...)``: keeps the options, lets the framework's class prepare, and
    installs on ``app`` when one is given (else ``init_app`` later)."""

    tool = staticmethod(tool)
    public = staticmethod(public)

    def __init__(
        self,
        app: Any | None = None,
        *,
        settings: ChioSettings | None = None,
        clock: Clock | None = None,
        guards: Sequence[Guard] = (),
        store: ReplayStore | None = None,
        sink: ReceiptSink | None = None,
        render_denial: DenialRenderer | None = None,
    ) -> None:
        self._settings = settings
        #: The runtime options besides the settings (ChioRuntime's keyword arguments).
        self._options: dict[str, Any] = {
            "clock": clock,
            "guards": guards,
            "store": store,
            "sink": sink,
        }
        self.render_denial = render_denial
        self._prepare()
        if app is not None:
            self.init_app(app)

    def _prepare(self) -> None:
        """Work done at construction, before any app is known (nothing by default)."""

    def init_app(self, app: Any) -> None:
        """Install the integration on ``app``."""
        raise NotImplementedError
