#!/usr/bin/env python3
"""The two commands of the README's Quick start, runnable with nothing but Python 3.11+ and pip.

    python3 dev.py devnet   create .venv, install layerchain, start a local testnet and train
    python3 dev.py test     create .venv, install layerchain with dev tools, run ruff, mypy, pytest
    python3 dev.py train    create .venv, install layerchain, train on digits with local kernels

Extra arguments after the command are passed on (to `layerchain devnet` or to pytest).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".layerchain-installed"


def run(*cmd: str | os.PathLike[str], **kwargs: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(extras: str) -> None:
    """Create .venv and (re)install the project when pyproject.toml or the extras changed."""
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
        run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    have = STAMP.read_text() if STAMP.exists() else ""
    if want not in have.split():
        spec = f".[{extras}]" if extras else "."
        run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", spec)
        STAMP.write_text(have + "\n" + want)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in {"devnet", "test", "train"}:
        print(__doc__)
        sys.exit(2)
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "test":
        ensure_venv("dev")
        run(BIN / "ruff", "check", ".")
        run(BIN / "mypy")
        run(BIN / "python", "-m", "pytest", "-q", *rest)
    elif command == "train":
        ensure_venv("")
        run(BIN / "layerchain", "train", *(rest or ["--local", "--dataset", "digits"]))
    else:
        ensure_venv("")
        run(BIN / "layerchain", command, *rest)


if __name__ == "__main__":
    main()
