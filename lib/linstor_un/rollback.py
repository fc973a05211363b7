"""Undo what an action created, and only that, when the action fails.

    with Rollback(report) as undo:
        create_thing()
        undo.add("delete thing", delete_thing)
        ...
        undo.commit()          # success: keep everything

Undos run in reverse order; an undo that fails is logged and the others still run.
"""
from __future__ import annotations

from typing import Callable

from .report import Report


class Rollback:
    def __init__(self, report: Report):
        self.report = report
        self.undos: list[tuple[str, Callable[[], object]]] = []

    def add(self, description: str, undo: Callable[[], object]) -> None:
        """`undo` runs if the block fails (what it returns is ignored)."""
        self.undos.append((description, undo))

    def commit(self) -> None:
        self.undos.clear()

    def run(self) -> None:
        while self.undos:
            description, undo = self.undos.pop()
            try:
                undo()
                self.report.info(f"rolled back: {description}")
            except Exception as err:      # keep undoing the rest
                self.report.error(f"rollback step failed ({description}): {err}")

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.run()
