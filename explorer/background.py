"""Work that lands after the explorer is on screen (the other runs, the names, the evaluation): the first run
is browsable within minutes, and every open page fills in as each step finishes, without a restart."""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


class Background:
    """Named steps run in order on one thread. `version` moves each time a step lands (pages compare it with
    the one they last drew and refresh); `status()` says what is still being computed."""

    def __init__(self, steps: list[tuple[str, Callable[[], object]]]):
        self.steps = steps
        self.done: list[str] = []
        self.failed: tuple[str, str] | None = None
        self.version = 0
        self._thread: threading.Thread | None = None

    def start(self) -> "Background":
        self._thread = threading.Thread(target=self._run, name="ard-background", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        for label, step in self.steps:
            started = time.perf_counter()
            try:
                step()
            except Exception as err:  # shown on every page; the explorer keeps serving what has landed
                log.exception("background step %r failed", label)
                self.failed = (label, f"{type(err).__name__}: {err}")
                break
            log.info("background step %r landed after %.0f s", label, time.perf_counter() - started)
            self.done.append(label)
            self.version += 1
        self.version += 1

    def pending(self) -> list[str]:
        failed = self.failed[0] if self.failed else None
        return [label for label, _ in self.steps if label not in self.done and label != failed]

    def status(self) -> str:
        """One line of HTML for the top of the page; empty once everything has landed."""
        if self.failed:
            label, why = self.failed
            return (f"<p><b>Background work stopped</b> at {html.escape(label)}: {html.escape(why)}. What had landed "
                    "is shown; run <code>ard run configs/demo.toml</code> to see the whole error.</p>")
        left = self.pending()
        if not left:
            return ""
        now, then = left[0], left[1:]
        text = f"<p><b>Still computing</b> (this page fills in as each lands, no reload needed): now {html.escape(now)}"
        if then:
            text += "; then " + ", ".join(html.escape(t) for t in then)
        return text + ".</p>"


@dataclass
class Refresh:
    """What a tab redraws when background work lands: fn(*inputs' values) -> one update per output."""

    fn: Callable[..., list]
    outputs: list
    inputs: list = field(default_factory=list)
