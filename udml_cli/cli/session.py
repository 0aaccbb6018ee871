"""The one piece of process-wide state a udml command has, in one object: its command line
(``--nproc`` runs the same one in N processes), where its data goes (the real stdout saved by
``app.main``, or a test's stream), and, in a process ``--nproc`` started, the folder where it
leaves its error line for the launcher (handed down in ``UDML_ERRORS_DIR``, read once here)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERRORS_ENV = "UDML_ERRORS_DIR"


@dataclass
class Session:
    args: list[str] = field(default_factory=list)
    data: Any = None  # None: sys.stdout (a library caller, not the CLI)

    @property
    def stdout(self):
        return self.data if self.data is not None else sys.stdout

    @property
    def errors_dir(self) -> Path | None:
        """Where a process the launcher started leaves its error line (None elsewhere)."""
        folder = os.environ.get(ERRORS_ENV)
        return Path(folder) if folder and "RANK" in os.environ else None

    @contextlib.contextmanager
    def started(self, args: list[str], data) -> Iterator[Session]:
        """This command's session: its arguments and data stream, restored after."""
        before = (self.args, self.data)
        self.args, self.data = list(args), data
        try:
            yield self
        finally:
            self.args, self.data = before

    @staticmethod
    @contextlib.contextmanager
    def handing_errors_to(folder: str) -> Iterator[None]:
        """The processes started inside leave their error lines in ``folder``."""
        os.environ[ERRORS_ENV] = folder  # the launcher's children inherit the environment
        try:
            yield
        finally:
            os.environ.pop(ERRORS_ENV, None)


SESSION = Session()
