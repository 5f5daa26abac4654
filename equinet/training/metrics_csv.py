"""``metrics.csv`` of a run: every logged value, one row per logging step, kept across
``--resume``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed run
would lose the history before the interruption. :class:`MetricsCSV` instead keeps the rows
logged before the checkpoint it resumes from (later ones are logged again) and appends. The
file is rewritten whole through a temporary file at every checkpoint and at the end, so it
always matches ``last.ckpt`` and is never left truncated.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from equinet.files import atomic_write

__all__ = ["MetricsCSV"]


class MetricsCSV(Logger):
    """Lightning logger writing ``folder/metrics.csv``.

    Args:
        folder: the run folder.
        resume_step: the global step of the checkpoint a resumed run starts from: the rows
            of earlier steps are kept. ``None`` for a new run.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None):
        super().__init__()
        self.path = Path(folder) / "metrics.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as file:
                self.rows = [row for row in csv.DictReader(file) if int(row["step"]) < resume_step]

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Nothing: the run folder's ``config.yaml`` holds the whole config."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {key: value.item() if hasattr(value, "item") else value for key, value in metrics.items()}
        self.rows.append({**values, "step": len(self.rows) if step is None else step})

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        columns = sorted({key for row in self.rows for key in row})
        with atomic_write(self.path) as partial, partial.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
