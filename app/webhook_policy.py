"""Which URLs a job may send its completion webhook to.

The operator sets `WEBHOOK_ALLOWED_HOSTS` (comma separated); empty means webhooks are disabled.
Entries are exact host names (`ci.example.com`), subdomain wildcards (`*.example.com`, which does
not match `example.com` itself), IP literals, or `*` for any public host. An IP literal in a
private, loopback, link-local or otherwise non-public range is refused unless that exact address
is listed: a wildcard never opens the internal network. Pure: no DNS, no I/O (the worker
re-validates and checks resolved addresses before it sends anything).
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("https", "http")


def allowed_host_entries(settings) -> list[str]:
    """The operator's allow-list as lower-case entries; accepts a list or a comma-separated string."""
    raw = getattr(settings, "webhook_allowed_hosts", None)
    if raw is None:
        raw = getattr(settings, "WEBHOOK_ALLOWED_HOSTS", "")
    if isinstance(raw, str):
        raw = raw.split(",")
    return [entry.strip().lower().rstrip(".") for entry in (raw or []) if entry and entry.strip()]


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def looks_numeric(host: str) -> bool:
    """Hosts like `2130706433` or `0x7f.1` that resolvers may read as IPs; no real TLD is numeric."""
    last = host.rsplit(".", 1)[-1]
    return last.isdigit() or last.startswith("0x")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for globally routable unicast addresses (not private, loopback, link-local, reserved...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def host_matches(host: str, entries: list[str]) -> str | None:
    """The allow-list entry that admits `host`: 'exact', 'wildcard', or None."""
    if host in entries:
        return "exact"
    for entry in entries:
        if entry == "*":
            return "wildcard"
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return "wildcard"
    return None


def validate_webhook_url(url: str, settings) -> str:
    """Return the URL unchanged if the operator's policy admits it; raise ValueError saying why not."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise ValueError("webhook URL contains whitespace or control characters")
    entries = allowed_host_entries(settings)
    if not entries:
        raise ValueError("webhooks are disabled on this server (the operator has not set WEBHOOK_ALLOWED_HOSTS)")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"webhook URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise ValueError("webhook URL must start with https:// or http://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook URL must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("webhook URL has no host")
    if port == 0:
        raise ValueError("webhook URL has an invalid port 0")
    address = ip_literal(host)
    if address is None and looks_numeric(host):
        raise ValueError(f"webhook host {host} is an ambiguous numeric address; write a host name or a plain IP")
    match = host_matches(host, entries)
    if address is not None and not is_public_address(address) and match != "exact":
        raise ValueError(f"webhook host {host} is a private, loopback or link-local address and is not on the allow-list")
    if match is None:
        raise ValueError(f"webhook host {host} is not on this server's allow-list")
    return url
