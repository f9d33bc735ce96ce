"""An HTTP session that reads the environment's proxy and CA settings once per host, not on every call.

`requests` looks them up in `os.environ` on every request (`Session.merge_environment_settings`: every variable
lower-cased and scanned, `no_proxy` matched against the host): about a third of the client's CPU per call, a
tenth of a worker's whole cost per new issue. A process's environment does not change while it runs, so the
answer is kept per (scheme, host) and per the session's own settings; what it returns is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests

if TYPE_CHECKING:
    from requests.sessions import _Settings


class EnvCachedSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self._from_env: dict[tuple[Any, ...], _Settings] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> _Settings:
        if proxies or not self.trust_env or not isinstance(url, str):  # per-call proxies: nothing to reuse
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        own = (tuple(sorted(self.proxies.items())), self.stream, self.verify, self.cert)
        key = (parts.scheme, parts.netloc, stream, verify, cert, own)
        found = self._from_env.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._from_env[key] = found
        copied = {name: dict(value) if isinstance(value, dict) else value for name, value in found.items()}
        return cast("_Settings", copied)  # a copy: requests may change what it is given
