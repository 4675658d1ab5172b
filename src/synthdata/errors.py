"""User-facing errors: each names where the problem is and what was expected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: file, line, field path and what was expected."""

    file: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SynthdataError(Exception):
    """Base of errors that the CLI prints without a traceback (exit status 2)."""

    exit_code = 2


class SpecError(SynthdataError):
    """A spec that cannot be used; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class OutputError(SynthdataError):
    """An output folder that cannot be used as asked (locked, another dataset, unsafe path)."""


class ModelError(SynthdataError):
    """A model, embedding or LoRA file that cannot be loaded safely."""


class ReferenceSetError(SynthdataError):
    """A real reference that cannot be used at all: a configured path that does not exist, or
    no readable image in it (memorization screening)."""
