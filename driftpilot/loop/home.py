"""The output folder a driver owns: wiped by its next run, never anyone else's."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_home(out: Path, command: str) -> None:
    """Make ``out`` an empty folder marked as made by ``driftpilot <command>``.

    A previous run's folder of the same command is wiped; a folder with anything else in it is
    refused, so a mistyped ``--out`` never deletes a user's files.
    """
    marker = out / f".driftpilot-{command}"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise FileExistsError(
                f"{out} exists and was not made by `driftpilot {command}`; choose another --out or remove it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"made by `driftpilot {command}`; wiped by its next run\n")
