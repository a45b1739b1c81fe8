"""Which hosts the crawler may contact: the board's own and the listed ones, at public addresses only."""
from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from pipeline.crawl.responses import HttpError


class HostPolicy:
    """Which hosts the crawler may contact: the board's own and the ones the user lists.

    - the URL must be http(s) and its host the base URL's host, or in `allow_hosts` (exact
      names; an entry starting with a dot also allows every subdomain);
    - unless the base URL's own host is a private, loopback or link-local address (a test
      server, an intranet board), every address the host resolves to must be a global one:
      a listed name that points at 127.0.0.1, 10.x or 169.254.169.254 is refused too.

    The server chooses the image URLs and redirects, so `HttpClient` asks this before every
    request and every redirect hop. (A name that resolves differently between this check and
    the connection, DNS rebinding, is not covered.)
    """

    def __init__(self, base_url: str, allow_hosts: Iterable[str] = (),
                 resolve: Optional[Callable[[str], list[str]]] = None) -> None:
        self.base_host = (urlsplit(base_url).hostname or "").lower()
        self.hosts = {self.base_host} | {h.strip().lower() for h in allow_hosts if h.strip()}
        self.resolve = resolve or _resolve
        self._private_ok: Optional[bool] = None
        self._checked: dict[str, Optional[str]] = {}
        self._lock = threading.Lock()

    def listed(self, host: str) -> bool:
        return host in self.hosts or any(h.startswith(".") and (host.endswith(h) or host == h[1:]) for h in self.hosts)

    def check(self, url: str) -> None:
        """Raise HttpError ("host not allowed" or "private address") unless `url` may be fetched."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise HttpError(url, "host not allowed", detail="not an http(s) URL")
        if not self.listed(host):
            raise HttpError(url, "host not allowed",
                            detail=f"{host} is neither the board's host {self.base_host} nor in crawl.allow_hosts")
        problem = self._address_problem(host)
        if problem:
            raise HttpError(url, "private address", detail=problem)

    def _address_problem(self, host: str) -> Optional[str]:
        with self._lock:
            if self._private_ok is None:
                self._private_ok = any(not _is_global(a) for a in self._addresses(self.base_host))
            if self._private_ok:
                return None
            if host not in self._checked:
                bad = [a for a in self._addresses(host) if not _is_global(a)]
                self._checked[host] = (f"{host} is {bad[0]}, not a public address (allowed only when the base URL is one)"
                                       if bad else None)
            return self._checked[host]

    def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            return self.resolve(host)
        except OSError:
            return []  # cannot be resolved: the request itself will fail with "host name not found"


def _resolve(host: str) -> list[str]:
    return sorted({info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


def _is_global(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
