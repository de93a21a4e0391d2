"""Progress display for long work (rich); silent with --quiet."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """step n/N, loss, tokens/s and expert balance (max/mean load; 1.0 is perfectly even)."""

    def __init__(self, total: int, start: int = 0, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self._tokens_per_s: float | None = None
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
            TextColumn("balance {task.fields[balance]}"), TimeRemainingColumn(),
            console=console or Console(stderr=True), disable=quiet, transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, loss="-", speed="-", balance="-")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, row: dict) -> None:
        speed = row["tokens_per_s"]
        # exponential smoothing: single steps on a shared CPU are noisy
        self._tokens_per_s = speed if self._tokens_per_s is None else 0.9 * self._tokens_per_s + 0.1 * speed
        balance = row.get("load_max_over_mean")
        self.progress.update(self.task, completed=step, loss=f"{row['loss']:.3f}",
                             speed=f"{self._tokens_per_s:,.0f}",
                             balance="-" if balance is None else f"{balance:.2f}")


class CountProgress:
    """label n/N with the time left: items of a batch job (evaluations, conversions)."""

    def __init__(self, label: str, total: int, quiet: bool = False, console: Console | None = None):
        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=console or Console(stderr=True), disable=quiet, transient=False)
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> "CountProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def advance(self) -> None:
        self.progress.advance(self.task)
