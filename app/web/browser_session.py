"""Browser sign-in state: the API key in an HttpOnly cookie, a CSRF token in a readable one.

The API (app.auth) accepts the `zd_key` cookie and, for unsafe methods, wants `zd_csrf`'s value back
in `X-CSRF-Token` or a `csrf_token` form field (double-submit). SameSite=Strict keeps both cookies
off cross-site requests; Secure is set whenever the request came over https.
"""
from __future__ import annotations

import secrets

from fastapi import Request, Response

from app.auth import CSRF_COOKIE, KEY_COOKIE, csrf_matches, tenant_for_key
from app.models import Tenant

MAX_AGE_S = 12 * 3600


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def csrf_token(request: Request) -> str:
    """The current token, or a fresh one (sign-in page: the form itself is CSRF-protected too)."""
    token = request.cookies.get(CSRF_COOKIE)
    return token if token and 20 <= len(token) <= 100 else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, max_age=MAX_AGE_S, httponly=False, samesite="strict",
                        secure=is_https(request), path="/")


def sign_in(response: Response, request: Request, key: str) -> None:
    secure = is_https(request)
    response.set_cookie(KEY_COOKIE, key, max_age=MAX_AGE_S, httponly=True, samesite="strict", secure=secure, path="/")
    # A new CSRF token on every sign-in: a token planted before sign-in is worthless afterwards.
    set_csrf_cookie(response, request, secrets.token_urlsafe(32))


def sign_out(response: Response) -> None:
    for name in (KEY_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")


def signed_in_tenant(request: Request, session) -> Tenant | None:
    return tenant_for_key(session, request.cookies.get(KEY_COOKIE))


def form_csrf_ok(request: Request, submitted) -> bool:
    return csrf_matches(request, submitted if isinstance(submitted, str) else None)
