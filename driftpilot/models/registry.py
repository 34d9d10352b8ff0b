"""Version registry: a version's artifacts on disk, its row in memory, checked on load."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from driftpilot.memory import versions
from driftpilot.memory.tables import Version
from driftpilot.models.base import TorchClassifier
from driftpilot.models.edge_export import student_artifacts
from driftpilot.models.families import load_model


class ArtifactError(RuntimeError, ValueError):
    """An artifact is missing or does not match the checksum recorded with its version (a
    ValueError too, so that callers refusing bad input refuse it with the rest)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_artifacts(version: Version) -> None:
    """Raise :class:`ArtifactError` unless every artifact exists with its recorded sha256."""
    for name in version.artifacts or {}:
        artifact_file(version, name)


def artifact_file(version: Version, name: str) -> tuple[Path, str]:
    """The path of ``version``'s artifact ``name`` and its sha256, after checking the bytes on
    disk still have that sum (what is handed to an edge node must be what was released).

    Raises
    ------
    LookupError
        When the version has no artifact of that name (the message lists the ones it has).
    ArtifactError
        When the file is missing or its bytes no longer match the recorded sum.
    """
    artifacts = version.artifacts or {}
    if name not in artifacts:
        raise LookupError(f"version {version.number} has no artifact '{name}'; it has {sorted(artifacts)}")
    meta = artifacts[name]
    path = Path(meta["path"])
    if not path.exists():
        raise ArtifactError(f"version {version.number}: artifact '{name}' is missing at {path}")
    actual = sha256_of(path)
    if actual != meta["sha256"]:
        raise ArtifactError(
            f"version {version.number}: artifact '{name}' at {path} has sha256 {actual}, expected {meta['sha256']}"
        )
    return path, str(meta["sha256"])


class Registry:
    """Stores every version's artifacts under ``root/<model>/<token>/``.

    A version's row records each artifact's path and sha256; :meth:`load` refuses an
    artifact whose bytes no longer match. Loaded models are kept per registry instance, so a
    loop that serves the same version for days loads it once.
    """

    def __init__(self, root: Path) -> None:
        # Absolute, so the paths recorded in versions hold from any working directory.
        self.root = Path(root).resolve()
        self._loaded: dict[tuple[int, int], TorchClassifier] = {}

    def register(
        self,
        *,
        session: Session,
        model_id: int,
        model_name: str,
        model: TorchClassifier,
        time: datetime,
        parent_id: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        snapshot_id: int | None = None,
        decision_id: int | None = None,
        stage: str = "candidate",
    ) -> Version:
        """Save ``model``'s artifacts (weights, config, ONNX), then record the version.

        A ``student`` (an edge model distilled from its parent version) also gets its edge graph
        with int8 weights, :data:`EDGE_ARTIFACT`: what an edge node downloads.

        The files are written first, into a fresh folder: if recording fails, the folder is
        removed and nothing refers to it.
        """
        folder = self.root / model_name / uuid.uuid4().hex[:16]
        try:
            paths = student_artifacts(model, folder) if stage == "student" else model.save(folder)
            artifacts = {name: {"path": str(path), "sha256": sha256_of(path)} for name, path in paths.items()}
            version = versions.add_version(
                session=session,
                model_id=model_id,
                time=time,
                parent_id=parent_id,
                artifacts=artifacts,
                metrics=dict(metrics or {}),
                snapshot_id=snapshot_id,
                decision_id=decision_id,
                stage=stage,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._loaded[(model_id, version.number)] = model
        return version

    def load(self, version: Version) -> TorchClassifier:
        key = (version.model_id, version.number)
        if key not in self._loaded:
            verify_artifacts(version)
            folder = Path(version.artifacts["weights"]["path"]).parent
            self._loaded[key] = load_model(folder)
        return self._loaded[key]
