"""Run mypy on the installed layout of the `cjkrag` package.

The code folders are subpackages of `cjkrag` only through setup.py's package-dir mapping, which mypy
cannot follow; so we mirror that mapping with symlinks under .typecheck/ (git-ignored) and check there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"pipeline": "pipeline", "connectors": "connectors", "ingest": "ingest", "configs": "configs"}


def main() -> int:
    tree = ROOT / ".typecheck" / "cjkrag"
    shutil.rmtree(tree.parent, ignore_errors=True)
    tree.mkdir(parents=True)
    for item in (ROOT / "cjkrag").iterdir():
        (tree / item.name).symlink_to(item)
    for sub, folder in MAPPING.items():
        (tree / sub).symlink_to(ROOT / folder)
    cmd = [sys.executable, "-m", "mypy", "-p", "cjkrag"]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
