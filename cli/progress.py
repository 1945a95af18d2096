"""Progress of long work on stderr, for a person watching: only when stderr is a terminal, and
``rich.progress`` (installed with Typer) imported only then. Nothing is printed otherwise.

* ``Bar(label, total, unit)``: done/total, rate (units per second, over the time so far), elapsed
  time and the time left.
* ``Phases(label)``: work that has no count to show (one request, or steps of unknown size): the
  phase it is in and the time elapsed, with a spinner; never a made-up percentage.
"""

from __future__ import annotations

import sys
import time


def on_terminal() -> bool:
    """A person watches: stderr, where progress is drawn, is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _console():
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


class Bar:
    """``label [bar] done/total unit  rate unit/s  elapsed  left`` on one line of stderr."""

    def __init__(self, label: str, total: int, unit: str = "rows") -> None:
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        started = time.monotonic()

        class Rate(ProgressColumn):  # done / elapsed: shown from the first update on
            def render(self, task) -> Text:
                elapsed = max(time.monotonic() - started, 1e-6)
                return Text(f"{task.completed / elapsed:,.0f} {unit}/s")

        class Left(ProgressColumn):
            def render(self, task) -> Text:
                elapsed = time.monotonic() - started
                if not task.completed or not task.total:
                    return Text("left -:--:--")
                seconds = max(0, int(elapsed * (task.total - task.completed) / task.completed))
                return Text(f"left {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}")

        self.label, self.unit = label, unit
        self._total = total
        self.progress = Progress(
            TextColumn(f"{label} ["),
            BarColumn(bar_width=30),
            TextColumn("] {task.completed:.0f}/{task.total:.0f} " + unit.replace("[", r"\[")),
            Rate(),
            TimeElapsedColumn(),
            Left(),
            console=_console(),
            transient=False,
            refresh_per_second=5,
        )
        self.progress.start()
        self.task = self.progress.add_task(label, total=total)

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        self.progress.update(self.task, total=value)

    def show(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def done(self) -> None:
        self.progress.refresh()
        self.progress.stop()


class Phases:
    """A spinner with the current phase and the time elapsed (for work without a count)."""

    def __init__(self, label: str, phase: str = "") -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn(f"{label}: " + "{task.description}"),
            TimeElapsedColumn(),
            console=_console(),
            refresh_per_second=5,
        )
        self.progress.start()
        self.task = self.progress.add_task(phase or "working", total=None)

    def phase(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def done(self) -> None:
        self.progress.refresh()
        self.progress.stop()


class _Nothing:
    def phase(self, text: str) -> None:
        pass

    def show(self, done: int) -> None:
        pass

    def done(self) -> None:
        pass


def phases(label: str, phase: str = ""):
    """``Phases`` on a terminal, else an object that prints nothing."""
    return Phases(label, phase) if on_terminal() else _Nothing()
