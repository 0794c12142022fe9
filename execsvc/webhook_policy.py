"""Where a job's ``webhook`` may go (``webhook_hosts`` in the worker's ``[policy]``).

A webhook is a request the worker makes for the job, from the worker's
network position, so the policy decides where it may go:

- By default any host, except link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``) and the cloud metadata services (:data:`REFUSED_NETWORKS`,
  :data:`REFUSED_NAMES`).
- With ``webhook_hosts`` set, only what it lists: a URL whose host is a
  listed name (``hooks.example.com``, or ``*.example.com`` for the names
  below it), or an address in a listed address or network (``127.0.0.1``,
  ``10.0.0.0/8``, ``::1``). A network listed explicitly is allowed even
  inside a refused one; the addresses a listed name resolves to must still
  be outside the refused networks (or in a listed one).

Checked twice. At the claim (:meth:`WebhookRule.url_problem`, no DNS look-up,
so the loop never waits on one): the URL's host as written, an address in
any of its numeric forms (``0xa9fea9fe``, ``2852039166``, ``[::ffff:...]``
all count as what they mean), or a name. When it is sent
(:meth:`WebhookRule.address_problem`, in the hook thread): every address
the name resolves to at that moment, and the request goes only to an
address that passes, so a name that resolves elsewhere later (DNS
rebinding) reaches nothing refused. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.0.0/16",  # IPv4 link-local, and the metadata service of AWS, GCP, Azure, OCI...
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
"""Addresses no webhook goes to unless ``webhook_hosts`` lists a network holding them."""

REFUSED_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
"""Host names of metadata services, refused unless ``webhook_hosts`` lists them by name."""

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


class WebhookRule:
    """The webhook rule of one worker: ``hosts`` is ``webhook_hosts`` (``None``: the default).

    Raises :class:`ValueError` naming an entry that is neither a host name nor an address or network.
    """

    def __init__(self, hosts: tuple[str, ...] | None = None) -> None:
        self.hosts = hosts
        self._names: list[str] = []
        self._networks: list[IPNetwork] = []
        for entry in hosts or ():
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            bare = name.removeprefix("*.")
            if not all(_LABEL.fullmatch(label) for label in bare.split(".")):
                raise ValueError(f"webhook_hosts: {entry!r} is neither a host name nor an address or network")
            self._names.append(name)

    def url_problem(self, url: str) -> str | None:
        """Why a webhook to ``url`` is refused at the claim, or ``None``; never raises, never looks up DNS."""
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port
        except ValueError as exc:
            return f"the webhook {url!r} is not a usable URL ({exc})"
        if parts.scheme not in ("http", "https") or not host:
            return f"the webhook {url!r} is not an http:// or https:// URL with a host"
        address = numeric_address(host)
        if address is not None:
            return self.address_problem(address, host)
        name = host.rstrip(".")
        if self._name_listed(name):
            return None
        if name in REFUSED_NAMES:
            return f"the webhook's host {host} is a cloud metadata service, which webhooks may not reach"
        if self.hosts is not None:
            return f"the webhook's host {host} is not in webhook_hosts ({', '.join(self.hosts)})"
        return None  # its addresses are checked when it is sent

    def address_problem(self, address: IPAddress, host: str) -> str | None:
        """Why ``address`` (one that ``host`` names or resolves to) may not be contacted, or ``None``."""
        checked = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            checked.append(address.ipv4_mapped)
        if any(candidate in network for candidate in checked for network in self._networks):
            return None
        shown = f"{host} ({address})" if str(address) != host else host
        refused = next((network for candidate in checked for network in REFUSED_NETWORKS if candidate in network), None)
        if refused is not None:
            return (
                f"the webhook's host {shown} is in {refused}, a link-local or cloud metadata address that "
                "webhooks may not reach unless webhook_hosts lists it"
            )
        if self.hosts is not None and not self._name_listed(host.rstrip(".")):
            return f"the webhook's host {shown} is not in webhook_hosts ({', '.join(self.hosts)})"
        return None

    def _name_listed(self, name: str) -> bool:
        name = name.lower()
        return any(name == entry or (entry.startswith("*.") and name.endswith(entry[1:])) for entry in self._names)


def numeric_address(host: str) -> IPAddress | None:
    """``host`` as an address if it is one in any form the system's resolver reads as numeric
    (``169.254.169.254``, ``0xa9fea9fe``, ``2852039166``, ``::1``), else ``None`` (a name)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0])) if infos else None
