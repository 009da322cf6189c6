"""Is the Hugging Face hub usable from here? (One quick probe, remembered for the process.)"""

from __future__ import annotations

import functools
import os
import socket


def hub_offline_requested() -> bool:
    """True when HF_HUB_OFFLINE asks for no network (tests and CI set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def _reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_available() -> bool:
    """False when offline is requested or huggingface.co cannot be reached within 3 s.

    Without this probe, `datasets` retries for ~25 s before giving up on a machine that
    has no network.
    """
    return not hub_offline_requested() and _reachable()
