"""The one error type of the data pipeline: a user's data is wrong, and where."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message is one line: ``source: frame N: problem; fix``."""

    def __init__(self, problem: str, source: str | None = None, frame: int | None = None):
        where = [str(source)] if source is not None else []
        if frame is not None:
            where.append(f"frame {frame}")
        super().__init__(": ".join([*where, problem]))
        self.problem, self.source, self.frame = problem, source, frame
