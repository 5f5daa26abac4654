"""The "did you mean" hint of one-line errors about an unknown name."""

from __future__ import annotations

import difflib

__all__ = ["closest"]


def closest(word: str, choices) -> str:
    """``"; did you mean 'x'?"`` for the entry ``x`` of ``choices`` closest to ``word``, or ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""
