"""Replace a folder as a whole: the new content is built beside it and swapped in by two renames.

Until `swap_in`, the folder is untouched; `roll_back` puts the previous content back, so an error at
any step (a bad captions file, a copy that fails, DVC refusing to push) leaves it exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class FolderSwap:
    def __init__(self, target: Path):
        self.target = Path(target)
        self.staging = self.target.with_name(f".{self.target.name}.staging")
        self.backup = self.target.with_name(f".{self.target.name}.previous")
        self._swapped = False
        # Leftovers of a process killed mid-swap. Killed between the two renames, the backup is the current data.
        if self.backup.exists() and not self.target.exists():
            self.backup.rename(self.target)
        shutil.rmtree(self.backup, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def swap_in(self) -> None:
        if self.target.exists():
            self.target.rename(self.backup)
        self.staging.rename(self.target)
        self._swapped = True

    def roll_back(self) -> None:
        if self._swapped:
            shutil.rmtree(self.target, ignore_errors=True)
            if self.backup.exists():
                self.backup.rename(self.target)
            self._swapped = False
        shutil.rmtree(self.staging, ignore_errors=True)

    def finish(self) -> None:
        shutil.rmtree(self.backup, ignore_errors=True)
