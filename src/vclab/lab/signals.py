"""The one owner of SIGINT, SIGTERM and SIGHUP in a vclab process.

While anything is `interruptible()` (a run, a lab), the signals raise: SIGINT KeyboardInterrupt,
SIGTERM and SIGHUP SystemExit(128 + signal), so every `finally` unwinds and removes what it
created. Nested users (the runner around each lab) share the handlers; the outermost restores
what was there before.

A teardown runs `deferred()`: a signal that arrives then is held, not acted on (a second Ctrl-C
must not leave half a teardown) and not dropped either: it is raised when the teardown is done,
so a Ctrl-C during the last repetition's teardown still ends the run as interrupted (exit 130)
instead of letting it finish.

Signal handlers belong to the main thread: elsewhere both are no-ops (a teardown in a worker
thread runs to its end; the main thread gets the signals).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise(signum: int, _frame: object) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    # SystemExit unwinds through every `finally`, as Ctrl-C does, with the shell's status.
    raise SystemExit(128 + signum)


class _Owner:
    def __init__(self) -> None:
        self._depth = 0
        self._saved: dict[int, object] = {}
        self._held: list[int] = []
        self._deferring = 0

    @staticmethod
    def _main() -> bool:
        return threading.current_thread() is threading.main_thread()

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Signals raise inside (see the module's docstring)."""
        if not self._main():
            yield
            return
        if self._depth == 0:
            # A run started from a background shell inherits SIGINT ignored (and Python then
            # keeps it so); `kill -INT` must still stop it cleanly.
            self._saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
            for sig in SIGNALS:
                signal.signal(sig, _raise)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                for sig, handler in self._saved.items():
                    signal.signal(sig, signal.SIG_DFL if handler is None else handler)
                self._saved = {}

    def _hold(self, signum: int, _frame: object) -> None:
        self._held.append(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals that arrive inside are raised on the way out, once (the first one)."""
        if not self._main():
            yield
            return
        outer = self._deferring == 0
        if outer:
            before = {sig: signal.getsignal(sig) for sig in SIGNALS}
            for sig in SIGNALS:
                signal.signal(sig, self._hold)
        self._deferring += 1
        in_flight: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            in_flight = exc
            raise
        finally:
            self._deferring -= 1
            if outer:
                for sig, handler in before.items():
                    signal.signal(sig, signal.SIG_DFL if handler is None else handler)
                held, self._held = self._held, []
                # An interrupt already on its way out carries on as it is; anything else
                # (a normal end, a failed repetition's exception) gives way to the signal.
                if held and not isinstance(in_flight, (KeyboardInterrupt, SystemExit)):
                    _raise(held[0], None)


# Process-wide, as the signal dispositions it manages are.
interrupts = _Owner()
