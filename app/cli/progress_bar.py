"""A terminal progress bar implementing `worker.progress.Progress`: one tqdm bar per stage, showing
units done (layers, steps), the current detail (e.g. the layer name) and tqdm's ETA."""
from __future__ import annotations

import sys

from tqdm import tqdm


class TqdmProgress:
    def __init__(self, stream=None, disable: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.disable = disable
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        if self.bar is None or stage != self.stage or total != self.bar.total:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=max(int(total), 0), desc=f"{stage:>10}", unit="step", file=self.stream,
                            disable=self.disable, dynamic_ncols=True, leave=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}] {postfix}")
        if int(done) < self.bar.n:  # the same stage started over (e.g. a second synthetic set)
            self.bar.reset(total=self.bar.total)
        step = int(done) - self.bar.n
        if step:
            self.bar.update(step)
        if detail:
            self.bar.set_postfix_str(detail[:60], refresh=False)
        self.bar.refresh()

    def check_cancelled(self) -> None:
        """Ctrl-C interrupts the CLI directly; there is nothing else to cancel it."""

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
