"""Reading the datasets' CSV / text list files with line numbers and one-line errors."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fersuite.data.errors import BadSamples
from fersuite.errors import DataFormatError


class FieldError(ValueError):
    """One field of one row is malformed (the caller adds file:line)."""


def require_dir(path: Path, what: str) -> Path:
    """``path`` must be a directory; ``what`` describes the expected layout."""
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise DataFormatError(f"{path} {state}; expected {what}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` must be a readable file; ``what`` describes its expected format."""
    if not path.is_file():
        state = "is not a file" if path.exists() else "not found"
        raise DataFormatError(f"{path}: {state}; expected {what}")
    return path


def parse_int(text: str, name: str, lo: int, hi: int) -> int:
    s = text.strip()
    try:
        value = int(s)
    except ValueError:
        raise FieldError(f"{name}={text!r} is not an integer; expected {lo}..{hi}") from None
    if not lo <= value <= hi:
        raise FieldError(f"{name}={value} is out of range; expected {lo}..{hi}")
    return value


def parse_float(text: str, name: str, lo: float, hi: float, allowed: Sequence[float] = ()) -> float:
    """A finite float in [lo, hi], or exactly one of ``allowed`` (e.g. AffectNet's -2)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise FieldError(f"{name}={text!r} is not a number; expected {lo}..{hi}") from None
    if value in allowed:
        return value
    if not math.isfinite(value) or not lo <= value <= hi:
        extra = "".join(f" or {a:g}" for a in allowed)
        raise FieldError(f"{name}={text.strip()} is out of range; expected {lo:g}..{hi:g}{extra}")
    return value


@dataclass(frozen=True)
class CsvRow:
    """One data row: its 1-based line number in the file and its fields by column name."""

    path: Path
    line: int
    index: int  # 0-based data-row index (blank lines not counted, malformed rows counted)
    fields: tuple[str, ...]
    columns: dict[str, int]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __getitem__(self, name: str) -> str:
        return self.fields[self.columns[name]]


class CsvTable:
    """A CSV file with a header naming ``required`` columns (in any order, extra allowed),
    or exactly ``required`` in order when ``exact`` is true."""

    def __init__(self, path: Path, required: Sequence[str], what: str, exact: bool = False) -> None:
        self.path = require_file(path, what)
        self.what = what
        self.required = tuple(required)
        try:
            self._fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
            header_line = self._fh.readline()
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                f"{path}:1: not UTF-8 text ({exc.reason}); expected {what}"
            ) from None
        except OSError as exc:
            raise DataFormatError(
                f"{path}: cannot be read ({exc.strerror}); expected {what}"
            ) from None
        try:
            header = next(csv.reader([header_line]), [])
        except csv.Error as exc:
            raise DataFormatError(f"{path}:1: malformed header ({exc}); expected {what}") from None
        header = [h.strip() for h in header]
        expected = ",".join(self.required)
        if exact and header != list(self.required):
            self._fh.close()
            raise DataFormatError(
                f"{path}:1: header is {','.join(header)!r}; expected {expected!r}"
            )
        missing = [c for c in self.required if c not in header]
        if missing:
            self._fh.close()
            raise DataFormatError(
                f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                f"expected columns {expected}"
            )
        self.header = header
        self.columns = {name: i for i, name in enumerate(header)}
        #: Data rows seen by :meth:`rows` so far (malformed ones included).
        self.n_rows = 0

    def rows(self, bad: BadSamples) -> Iterator[CsvRow]:
        """Data rows; blank lines are ignored, rows with a wrong field count go to ``bad``."""
        n = len(self.header)
        line = 1
        index = -1
        reader = csv.reader(self._fh)
        try:
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise DataFormatError(
                        f"{self.path}:{line + 1}: malformed CSV ({exc})"
                    ) from None
                except UnicodeDecodeError as exc:
                    raise DataFormatError(
                        f"{self.path}:{line + 1}: not UTF-8 text ({exc.reason})"
                    ) from None
                line = reader.line_num + 1  # +1: the header was read before the reader
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                index += 1
                if len(fields) != n:
                    bad(
                        f"{self.path}:{line}",
                        f"has {len(fields)} fields; expected {n} ({','.join(self.header)})",
                        "wrong field count",
                    )
                    continue
                yield CsvRow(self.path, line, index, tuple(fields), self.columns)
        finally:
            self.n_rows = index + 1
            self._fh.close()


def read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line of a text file."""
    require_file(path, what)
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for i, text in enumerate(fh, start=1):
                s = text.strip()
                if s:
                    yield i, s
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason}); expected {what}") from None
