"""The operator's webhook allow-list: what it admits and what it refuses, including hostile URLs."""
from types import SimpleNamespace

import pytest

from app.webhook_policy import validate_webhook_url


def settings(hosts):
    return SimpleNamespace(webhook_allowed_hosts=hosts)


def test_empty_allow_list_disables_webhooks():
    with pytest.raises(ValueError, match="disabled"):
        validate_webhook_url("https://ci.example.com/hook", settings(""))


@pytest.mark.parametrize("hosts", ["ci.example.com", ["ci.example.com"], " CI.example.com , other.org"])
def test_exact_host_is_admitted(hosts):
    url = "https://ci.example.com:8443/hook?x=1"
    assert validate_webhook_url(url, settings(hosts)) == url


def test_unlisted_host_is_refused():
    with pytest.raises(ValueError, match="not on this server's allow-list"):
        validate_webhook_url("https://evil.example.net/hook", settings("ci.example.com"))


def test_subdomain_wildcard_does_not_match_parent_or_lookalike():
    s = settings("*.example.com")
    assert validate_webhook_url("https://a.b.example.com/x", s)
    for url in ("https://example.com/x", "https://badexample.com/x", "https://example.com.evil.org/x"):
        with pytest.raises(ValueError):
            validate_webhook_url(url, s)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://10.0.0.5/hook", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook", "http://[fe80::1]/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
])
def test_private_ip_literals_refused_even_with_star(url):
    with pytest.raises(ValueError, match="private, loopback or link-local"):
        validate_webhook_url(url, settings("*"))


def test_private_ip_admitted_only_when_exactly_listed():
    assert validate_webhook_url("http://127.0.0.1:9000/hook", settings("127.0.0.1"))
    assert validate_webhook_url("http://[::1]:9000/hook", settings("::1"))
    with pytest.raises(ValueError):
        validate_webhook_url("http://127.0.0.2/hook", settings("127.0.0.1"))


def test_public_ip_with_star():
    assert validate_webhook_url("https://8.8.8.8/hook", settings("*"))


@pytest.mark.parametrize("url,message", [
    ("ftp://ci.example.com/x", "https:// or http://"),
    ("file:///etc/passwd", "https:// or http://"),
    ("javascript:alert(1)", "https:// or http://"),
    ("https://user:pw@ci.example.com/x", "user name or password"),
    ("https:///nohost", "no host"),
    ("https://ci.example.com:99999/x", "malformed"),
    ("https://ci.example.com/a b", "whitespace"),
    ("https://ci.example.com/\r\nX-Injected: 1", "whitespace or control"),
    ("", "empty"),
    ("https://ci.example.com/" + "a" * 3000, "longer than"),
    ("http://2130706433/", "ambiguous numeric"),
    ("http://0x7f.1/", "ambiguous numeric"),
])
def test_malformed_and_hostile_urls(url, message):
    with pytest.raises(ValueError, match=message):
        validate_webhook_url(url, settings("*,ci.example.com"))


def test_non_string_is_refused():
    with pytest.raises(ValueError):
        validate_webhook_url(None, settings("*"))
