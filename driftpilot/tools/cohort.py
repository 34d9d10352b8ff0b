"""Stable cohort assignment: which entities a canary serves.

An entity's bucket comes from SHA-256 of the salt and the entity, never from Python's
``hash()``, which is salted per process (PYTHONHASHSEED): the API, the edge node and a
replay months later must all put a device in the same cohort.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["canary_mask", "cohort_bucket", "in_canary"]

_MANTISSA_BITS = 53


def cohort_bucket(entity: str, salt: str = "") -> float:
    """The entity's bucket in [0, 1), the same on every process and machine.

    The first 8 bytes of ``sha256(salt + ":" + entity)``, read as a big-endian
    integer and divided by 2**64. Only its top 53 bits are kept (``>> 11``, then
    / 2**53) so that the division is exact in a float and never rounds up to 1.0.

    Examples
    --------
    >>> round(cohort_bucket("dev-17"), 6)
    0.18249
    >>> cohort_bucket("dev-17", salt="release-42") == cohort_bucket("dev-17")
    False
    """
    if not isinstance(entity, str):
        raise TypeError(f"entity must be a string, got {entity!r}")
    digest = hashlib.sha256(f"{salt}:{entity}".encode()).digest()
    value = int.from_bytes(digest[:8], "big") >> (64 - _MANTISSA_BITS)
    return value / 2**_MANTISSA_BITS


def _check_share(share: float) -> None:
    if math.isnan(share) or not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")


def in_canary(entity: str, share: float, salt: str = "") -> bool:
    """Whether ``entity`` falls in the canary cohort of size ``share``.

    Cohorts are nested: an entity in the 5% canary stays in it when the share grows
    to 10%, as long as the salt is the same.

    Examples
    --------
    >>> in_canary("dev-17", 0.1), in_canary("dev-17", 0.5)
    (False, True)
    """
    _check_share(share)
    return cohort_bucket(entity, salt) < share


def canary_mask(entities: Sequence[str], share: float, salt: str = "") -> np.ndarray:
    """Boolean mask of the entities in the canary cohort, in the order given.

    Examples
    --------
    >>> canary_mask(["dev-1", "dev-2", "dev-3", "dev-17"], 0.5)
    array([False,  True, False,  True])
    """
    _check_share(share)
    buckets = np.array([cohort_bucket(entity, salt) for entity in entities], dtype=float)
    return buckets < share
