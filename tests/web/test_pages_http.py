"""The browser app's pages and form posts over plain HTTP: hostile and oversize input, cookies, schema-driven form."""
import re

import httpx
import pytest

from app.schemas import JobConfig
from app.web.job_form import SKIPPED, job_form_fields

pytestmark = pytest.mark.e2e


def test_job_form_covers_every_api_field():
    basic, advanced = job_form_fields()
    names = [f.name for f in basic + advanced]
    assert sorted(names) == sorted(n for n in JobConfig.model_fields if n not in SKIPPED)
    assert all(f.explanation for f in basic + advanced), [f.name for f in basic + advanced if not f.explanation]
    kinds = {f.name: f.kind for f in basic + advanced}
    assert kinds["synthetic"] == "choice" and kinds["compile"] == "bool" and kinds["input_shape"] == "shape"


@pytest.fixture
def browser_client(running_service):
    with httpx.Client(base_url=running_service.url, timeout=30) as client:
        client.get("/signin")  # receives the zd_csrf cookie like a browser would
        yield client


def signin(client, api_key, **headers):
    return client.post("/signin", data={"api_key": api_key, "csrf_token": client.cookies["zd_csrf"]},
                       headers=headers)


@pytest.mark.parametrize("api_key", ["", "<script>alert(1)</script>", "x" * 499, "zd_" + "\u00e9" * 50, "' OR 1=1 --"])
def test_hostile_keys_are_refused_and_escaped(browser_client, api_key):
    response = signin(browser_client, api_key)
    assert response.status_code == 401
    assert "zd_key" not in response.cookies
    assert "<script>alert" not in response.text


def test_oversize_key_is_refused(browser_client):
    response = signin(browser_client, "x" * 100_000)
    assert response.status_code in (401, 413, 422)
    assert "zd_key" not in response.cookies


def test_signin_sets_locked_down_cookies_and_rotates_csrf(running_service, browser_client):
    key = running_service.create_key("pages-http")
    before = browser_client.cookies["zd_csrf"]
    response = signin(browser_client, key)
    assert response.status_code == 303 and response.headers["location"] == "/jobs"
    set_cookie = response.headers.get_list("set-cookie")
    key_cookie = next(c for c in set_cookie if c.startswith("zd_key="))
    assert "HttpOnly" in key_cookie and re.search("SameSite=strict", key_cookie, re.I) and "Secure" not in key_cookie
    assert browser_client.cookies["zd_csrf"] != before
    page = browser_client.get("/jobs")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    # Sign-out clears both cookies.
    out = browser_client.post("/signout", data={"csrf_token": browser_client.cookies["zd_csrf"]})
    assert out.status_code == 303
    assert all(re.search("Max-Age=0|expires=Thu, 01 Jan 1970", c, re.I) for c in out.headers.get_list("set-cookie"))


def test_cookies_are_secure_behind_https(running_service, browser_client):
    key = running_service.create_key("pages-https")
    response = signin(browser_client, key, **{"X-Forwarded-Proto": "https"})
    assert all("Secure" in c for c in response.headers.get_list("set-cookie"))


def test_api_accepts_the_cookie_for_reads(running_service, browser_client):
    key = running_service.create_key("pages-cookie")
    signin(browser_client, key)
    assert browser_client.get("/v1/jobs").status_code == 200
