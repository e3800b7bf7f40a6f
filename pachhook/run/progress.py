"""What a build looks like while it runs: live lines on a terminal, timestamped lines elsewhere.

The Docker adapter reports events (stage, step, output, finish) from its worker
threads; this module decides how they are shown. On a terminal the command line
gets one live row per image (stage, step, elapsed, last output line) and a summary
table at the end. Everywhere else (hooks, CI, pipes) every event worth keeping is
one plain line: `12:01:02 docker.io/acme/app:ph-3f9a1c2e7b40 step 3/7 RUN make`.

rich is imported only when the live display starts, so runs that build nothing
never pay for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from pachhook.errors import one_line

if TYPE_CHECKING:
    from pachhook.docker.engine import ImageResult

Say = Callable[[str], None]

_INSTRUCTION_WIDTH = 60
_IMAGE_WIDTH = 48  # the end of a reference (name:tag) says the most: cut from the left


@dataclass(frozen=True)
class _Row:
    """What the live display shows of one image at one moment."""

    reference: str
    started: float
    stage: str = "waiting"
    step: str = ""
    last: str = ""
    finished: float | None = None
    failed: bool = False


class BuildProgress:
    """Receives build events from any thread and shows them.

    `say` prints one line for people (execution's callback); `live` asks for the
    rich display on `stream` (only meaningful when it is a terminal).
    """

    def __init__(
        self,
        say: Say,
        *,
        live: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.say = say
        self.live = live
        self.stream = stream
        self.clock = clock
        self._rows: dict[str, _Row] = {}
        self._snapshot: tuple[_Row, ...] = ()
        self._lock = threading.RLock()
        self._display: Any = None  # rich.live.Live once started
        self._closed = False

    @classmethod
    def for_run(cls, say: Say, *, interactive: bool, stream: TextIO | None = None) -> BuildProgress:
        """Live when `interactive` and `stream` is a terminal; plain lines otherwise."""
        tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        return cls(say, live=interactive and tty, stream=stream)

    # -- events --------------------------------------------------------------------

    def message(self, line: str) -> None:
        """A line that is not about one build step (the executor's own news)."""
        with self._lock:
            if self._display is None:
                self.say(f"{self._now()} {line}")
            else:
                self._print(line)

    def stage(self, reference: str, stage: str) -> None:
        """`reference` entered `stage`: sending context, building, pushing, verifying."""
        with self._lock:
            row = self._row(reference)
            self._update(row, stage=stage, step=row.step if stage == "building" else "")
            if stage != "building":  # plain lines show the steps themselves
                self._plain(reference, stage)

    def step(
        self, reference: str, number: int, total: int, instruction: str, stage: str | None = None
    ) -> None:
        """A step began: `number` of `total` (of its build `stage`, with BuildKit, whose
        stages run side by side)."""
        with self._lock:
            row = self._row(reference)
            text = _short(instruction)
            label = f"{stage} {number}/{total}" if stage else f"{number}/{total}"
            self._update(row, stage="building", step=label, last=text)
            self._plain(reference, f"step {label} {text}")

    def output(self, reference: str, line: str) -> None:
        """One line of the build's own output: shown live, kept out of plain logs."""
        text = line.strip()
        if not text:
            return
        with self._lock:
            self._update(self._row(reference), last=_short(text))

    def finished(self, result: ImageResult, tail: Sequence[str] = ()) -> None:
        """A build ended; on failure, the end of its log is shown."""
        with self._lock:
            row = self._row(result.reference)
            self._update(
                row,
                stage=result.status,
                step="",
                last="",
                finished=self.clock(),
                failed=not result.ok,
            )
            if result.ok:
                self._plain(result.reference, f"{result.status} in {result.seconds:.1f}s")
                return
            self._plain(result.reference, f"failed in {result.seconds:.1f}s: {result.error}")
            if not tail:
                return
            self._print(f"--- last {len(tail)} lines of the build log of {result.reference} ---")
            for line in tail:
                self._print(f"  {line}")
            if result.log_path:
                self._print(f"--- full log: {result.log_path} ---")

    def close(self) -> None:
        """Stop the live display (the terminal is left as it was before)."""
        with self._lock:
            self._closed = True
            if self._display is not None:
                self._display.stop()

    def summary(self, results: Sequence[ImageResult]) -> None:
        """On a terminal that showed live progress, a table of what became of each image."""
        with self._lock:
            if self._display is not None and results:
                self._display.console.print(_summary_table(results))

    # -- showing -------------------------------------------------------------------

    def _row(self, reference: str) -> _Row:
        row = self._rows.get(reference)
        if row is None:
            row = self._rows[reference] = _Row(reference, self.clock())
            if self.live and not self._closed and self._display is None:
                self._start_live()
        return row

    def _update(self, row: _Row, **changes: Any) -> None:
        self._rows[row.reference] = replace(row, **changes)
        # rich's refresh thread reads this tuple without our lock (it holds its own, and an
        # event holding ours may be printing through rich): replaced whole, never mutated.
        self._snapshot = tuple(self._rows.values())

    def _plain(self, reference: str, text: str) -> None:
        if self._display is None:
            self.say(f"{self._now()} {reference} {text}")

    def _print(self, line: str) -> None:
        """A line above the live area, or a plain line."""
        if self._display is not None:
            self._display.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.say(line)

    def _now(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.clock()))

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream, stderr=self.stream is None)
        self._display = Live(
            _LiveTable(self),
            console=console,
            refresh_per_second=4,
            transient=True,
            # Other writers (plain prints) would tear the live area: rich moves them above it.
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._display.start()

    def rows(self) -> tuple[_Row, ...]:
        return self._snapshot


class _LiveTable:
    """Rendered by rich on each refresh: one fixed-layout line per image, cut to the
    terminal's width (the last output line gives way first)."""

    def __init__(self, progress: BuildProgress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        rows = self.progress.rows()
        now = self.progress.clock()
        width = min(_IMAGE_WIDTH, max((len(r.reference) for r in rows), default=5))
        header = f"{'image':<{width}}  {'stage':<15} {'step':>7} {'elapsed':>8}"
        yield Text(header, style="bold", no_wrap=True, overflow="ellipsis")
        for row in rows:
            elapsed = (row.finished or now) - row.started
            line = (
                f"{_left_cut(row.reference, width):<{width}}  {row.stage:<15} {row.step:>7} "
                f"{elapsed:>7.1f}s  {row.last}"
            )
            style = "red" if row.failed else ("green" if row.finished else "")
            text = Text(line[: options.max_width], style=style, no_wrap=True)
            yield text


def _summary_table(results: Sequence[ImageResult]) -> Any:
    from rich.table import Table

    table = Table(title="images", title_justify="left", header_style="bold")
    longest = max((len(r.reference) for r in results), default=5)
    # The reference stays on one line; the error wraps in what is left.
    table.add_column("image", no_wrap=True, min_width=min(longest, _IMAGE_WIDTH))
    table.add_column("status", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("error", overflow="fold", ratio=1)
    for r in results:
        style = "red" if not r.ok else ("green" if r.status == "built" else "")
        table.add_row(r.reference, r.status, f"{r.seconds:.1f}s", r.error or "", style=style)
    return table


def _left_cut(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _short(text: str, width: int = _INSTRUCTION_WIDTH) -> str:
    return one_line(text, width)
