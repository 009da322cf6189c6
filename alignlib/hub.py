"""Is the Hugging Face hub usable from here? (One quick probe, remembered for the process.)

The probe goes through huggingface_hub's own HTTP client (`get_session`), to the endpoint that
huggingface_hub downloads from (`constants.ENDPOINT`, set by ``HF_ENDPOINT``: a mirror such as
https://hf-mirror.com), so proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) and a client
set with `huggingface_hub.set_client_factory` apply to it as they apply to the downloads.
"""

from __future__ import annotations

import functools
import os

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import get_session, httpx  # httpx: the HTTP library of this huggingface_hub version

PROBE_TIMEOUT_S = 3.0
# What a hub call raises when the network, a proxy, the endpoint or the repository fails, and nothing else:
# HTTP errors (HfHubHTTPError: 4xx/5xx, no such repository or revision), a file neither downloadable nor
# cached (LocalEntryNotFoundError), transport failures of huggingface_hub's HTTP library (connect, timeout,
# proxy, protocol), and OSError, which covers `datasets`' ConnectionError ("Couldn't reach ... on the Hub"),
# its DatasetNotFoundError (a FileNotFoundError), OfflineModeIsEnabled and requests' RequestException.
# HfHubHTTPError and LocalEntryNotFoundError are OSErrors too; they are named for the reader.
HUB_ERRORS: tuple[type[Exception], ...] = (HfHubHTTPError, LocalEntryNotFoundError, httpx.TransportError, OSError)
HUB_HINT = ("Set HF_HUB_OFFLINE=1 to skip the hub; to reach it, check HF_ENDPOINT (e.g. a mirror) and "
            "the proxy settings (HTTPS_PROXY, NO_PROXY).")


def hub_offline_requested() -> bool:
    """True when HF_HUB_OFFLINE asks for no network (tests and CI set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def endpoint_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when `endpoint` answers a HEAD request within `timeout` seconds with a status below 500.

    Remembered per endpoint for the process (`endpoint_reachable.cache_clear()` forgets). A failure is
    printed once, with what to do.
    """
    try:
        status = get_session().head(endpoint, timeout=timeout).status_code
    except (httpx.TransportError, OSError) as e:  # no network, proxy refused, DNS, timeout, offline mode
        failure = short_error(e)
    else:
        if status < 500:
            return True
        failure = f"HTTP {status}"
    print(f"[alignlib] the Hugging Face hub at {endpoint} is not usable ({failure}); using the offline data "
          f"and weights. {HUB_HINT}")
    return False


def hub_available() -> bool:
    """False when offline is requested or the hub endpoint (``HF_ENDPOINT``) does not answer within 3 s.

    Without this probe, `datasets` retries for ~25 s before giving up on a machine that
    has no network.
    """
    return not hub_offline_requested() and endpoint_reachable(constants.ENDPOINT)


def short_error(error: BaseException, limit: int = 200) -> str:
    """'Type: message' of an exception on one line, cut to `limit` characters."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
