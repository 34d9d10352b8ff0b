"""Small builders shared by the memory tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 1, 10, 0)


def event(i: int, **changes: Any) -> dict[str, Any]:
    """A valid ONT event ``ont-<i>`` at ``T0 + i minutes``, with ``changes`` applied."""
    base: dict[str, Any] = {
        "key": f"ont-{i}/{(T0 + timedelta(minutes=i)).isoformat()}",
        "time": T0 + timedelta(minutes=i),
        "entity": f"ont-{i % 3}",
        "group": f"port-{i % 2}",
        "features": {
            "rx_power": -20.0 - i / 10,
            "temperature": 45.0 + i,
            "firmware": "v1",
        },
        "served_version": 1,
        "prediction": "online",
        "probabilities": {"online": 0.75, "offline": 0.25},
    }
    base.update(changes)
    return base
