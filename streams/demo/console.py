"""The demo's console: numbered step lines with timings, and progress bars or periodic progress lines."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Console:
    """Numbered step lines with timings on ``out``; progress bars (or periodic lines) on stderr."""

    def __init__(self, *, out: TextIO, total: int, bars: bool) -> None:
        self.out = out
        self.total = total
        self.bars = bars
        self.number = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """Yields a list the step appends its result to; prints ``[n/N] title: result (t s)`` at the end."""
        self.number += 1
        tag = f"[{self.number:>2}/{self.total}]"
        notes: list[str] = []
        started = time.perf_counter()
        try:
            yield notes
        except BaseException as exc:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            self.say(f"{tag} {title}: {what} after {time.perf_counter() - started:.1f} s")
            raise
        detail = "; ".join(notes)
        self.say(f"{tag} {title}: {detail} ({time.perf_counter() - started:.1f} s)")

    def progress(self, total: int, desc: str, unit: str = "ev") -> Progress:
        return Progress(total, desc, unit, bar=self.bars)


class Progress:
    """A tqdm bar on a terminal; elsewhere (CI logs, pipes) a plain line every ``every`` seconds."""

    def __init__(self, total: int, desc: str, unit: str, *, bar: bool, every: float = 15.0) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self.note = ""
        self.every = every
        self._last = time.monotonic()
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"      {desc}", unit=unit, unit_scale=True, leave=False)

    def set(self, n: int, note: str = "") -> None:
        n = min(max(n, 0), self.total) if self.total else n
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            if note != self.note:
                self._bar.set_postfix_str(note)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            share = f"{100 * n / self.total:3.0f}%" if self.total else ""
            print(f"      {self.desc}: {share} {n:,}/{self.total:,} {note}", file=sys.stderr, flush=True)
        self.n = n
        self.note = note

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
