"""kdbench's bundled data: the suites (``*.toml``), the lm-eval task YAMLs (``tasks/``) and the
hardware price table (``prices/default.toml``).

In the checkout this is the top-level ``leaderboards/`` folder; a wheel (and an editable
install) maps it to the package ``kdbench_leaderboards`` (``[tool.setuptools.package-dir]`` in
pyproject.toml), so ``pip install kdbench`` carries it. Code finds these files with
:func:`path` (``importlib.resources``), never by a path relative to the source tree.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from pathlib import Path

_extracted = contextlib.ExitStack()  # files copied out of a zipped install, kept until exit
atexit.register(_extracted.close)


def path(*parts: str) -> Path:
    """A real filesystem path to a bundled file or folder, e.g. ``path("tasks")``.

    A wheel or editable install keeps the data on disk, where ``importlib.resources`` already
    gives a path (lm-eval's TaskManager needs a folder on disk); anything else (a zipped
    install) is copied to a temporary location that lasts until the process exits.
    """
    resource = files(__name__).joinpath(*parts)
    if isinstance(resource, Path):
        return Path(str(resource))
    return Path(_extracted.enter_context(as_file(resource)))
