"""API keys and who is calling.

A key is `zd_` + 43 url-safe random characters; only its sha256 is stored (a high-entropy secret needs
no slow hash), plus a short prefix to recognise it. Callers authenticate with `Authorization: Bearer KEY`
or, from the browser app, the HttpOnly cookie `zd_key`; cookie-authenticated unsafe requests must also
carry the `zd_csrf` cookie's value in the `X-CSRF-Token` header or a `csrf_token` form field.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db import SessionDep, utcnow
from app.models import ApiKey, Tenant

KEY_COOKIE = "zd_key"
CSRF_COOKIE = "zd_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
KEY_PREFIX_LEN = 11  # "zd_" + 8 characters


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return "zd_" + secrets.token_urlsafe(32)


def create_api_key(session: Session, *, tenant_name: str) -> tuple[Tenant, str]:
    """Create (or reuse) the tenant and a new key for it; the plain key is returned once and never stored."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = generate_key()
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:KEY_PREFIX_LEN], key_hash=hash_key(key)))
    session.commit()
    return tenant, key


def list_api_keys(session: Session, *, tenant_name: str | None = None) -> list[ApiKey]:
    """Every key (revoked ones too), oldest first; the plain keys are not stored, so only prefixes show."""
    query = select(ApiKey).join(Tenant).order_by(ApiKey.created_at, ApiKey.id)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return list(session.scalars(query))


def revoke_api_key(session: Session, ident: str) -> ApiKey:
    """Revoke the key whose id or prefix is `ident` (at once: the next request with it gets 401).
    A prefix shared by several keys is refused rather than guessed."""
    ident = ident.strip()
    matches = list(session.scalars(select(ApiKey).where((ApiKey.id == ident) | (ApiKey.prefix == ident))))
    if not matches:
        raise LookupError(f"no API key with id or prefix {ident!r} ('zerodata keys list' shows them)")
    if len(matches) > 1:
        raise LookupError(f"prefix {ident!r} matches {len(matches)} keys; revoke by id instead")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


def tenant_for_key(session: Session, key: str | None) -> Tenant | None:
    """The tenant owning this key, or None for an unknown, revoked or malformed key."""
    if not key or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
    return row.tenant if row is not None else None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthorized("Authorization header must be 'Bearer <API key>'")
    return value.strip()


def csrf_matches(request: Request, submitted: str | None) -> bool:
    expected = request.cookies.get(CSRF_COOKIE)
    return bool(expected and submitted and hmac.compare_digest(expected, submitted))


async def _submitted_csrf(request: Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form()  # cached by Starlette: the route still sees the form
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


class Caller:
    """Who is calling and how: `via_cookie` callers of unsafe methods still owe a CSRF proof."""

    def __init__(self, tenant: Tenant, via_cookie: bool):
        self.tenant = tenant
        self.via_cookie = via_cookie


def _authenticate(request: Request, session: Session) -> Caller:
    key = bearer_key(request)
    via_cookie = False
    if key is None:
        key = request.cookies.get(KEY_COOKIE)
        via_cookie = key is not None
    if key is None:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <API key>'")
    tenant = tenant_for_key(session, key)
    if tenant is None:
        raise _unauthorized("invalid or revoked API key")
    return Caller(tenant, via_cookie)


async def current_tenant(request: Request, session: SessionDep) -> Tenant:
    caller = await run_in_threadpool(_authenticate, request, session)  # keep the event loop free of DB waits
    if caller.via_cookie and request.method in UNSAFE_METHODS:
        if not csrf_matches(request, await _submitted_csrf(request)):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    return caller.tenant


def current_caller_deferred_csrf(request: Request, session: SessionDep) -> Caller:
    """For streamed multipart uploads: the route checks CSRF itself after reading the form fields."""
    return _authenticate(request, session)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
CallerDep = Annotated[Caller, Depends(current_caller_deferred_csrf)]
