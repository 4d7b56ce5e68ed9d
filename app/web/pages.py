"""HTML pages and the sign-in/sign-out posts. Everything else the pages do goes through /v1 from JS."""
from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app import crud
from app.auth import tenant_for_key
from app.db import SessionDep
from app.storage import StorageError, get_storage
from app.web import browser_session as bs
from app.web.job_form import job_form_fields
from worker.report_html import render_report_section, report_css, report_summary

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
# Pages load scripts and styles from /static only: no inline script can run, whatever a page shows.
CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " \
      "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
router = APIRouter(include_in_schema=False)


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    token = bs.csrf_token(request)
    response = TEMPLATES.TemplateResponse(request, name, {"csrf_token": token, **context}, status_code=status_code)
    if request.cookies.get(bs.CSRF_COOKIE) != token:
        bs.set_csrf_cookie(response, request, token)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def to_signin() -> RedirectResponse:
    return RedirectResponse("/signin", status_code=303)


@router.get("/")
def home(request: Request, session: SessionDep):
    return RedirectResponse("/jobs" if bs.signed_in_tenant(request, session) else "/signin", status_code=303)


@router.get("/signin")
def signin_page(request: Request):
    return page(request, "signin.html.j2", title="Sign in")


@router.post("/signin")
def signin(request: Request, session: SessionDep, api_key: str = Form("", max_length=500),
           csrf_token: str = Form("", max_length=200)):
    if not bs.form_csrf_ok(request, csrf_token):
        return page(request, "signin.html.j2", 403, title="Sign in",
                    error="Your sign-in form expired or came from another site. Please try again.")
    tenant = tenant_for_key(session, api_key.strip())
    if tenant is None:
        return page(request, "signin.html.j2", 401, title="Sign in",
                    error="That API key is not valid (unknown or revoked). Create one with `zerodata keys create`.")
    response = RedirectResponse("/jobs", status_code=303)
    bs.sign_in(response, request, api_key.strip())
    return response


@router.post("/signout")
def signout(request: Request, csrf_token: str = Form("", max_length=200)):
    if not bs.form_csrf_ok(request, csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token")
    response = to_signin()
    bs.sign_out(response)
    return response


@router.get("/upload")
def upload_page(request: Request, session: SessionDep):
    tenant = bs.signed_in_tenant(request, session)
    if tenant is None:
        return to_signin()
    return page(request, "upload.html.j2", title="Upload a model", tenant=tenant)


@router.get("/jobs/new")
def new_job_page(request: Request, session: SessionDep, model_id: str = ""):
    tenant = bs.signed_in_tenant(request, session)
    if tenant is None:
        return to_signin()
    model = crud.get_model(session, tenant_id=tenant.id, model_id=model_id[:64]) if model_id else None
    if model is None:
        return page(request, "error.html.j2", 404, title="Model not found", tenant=tenant,
                    message="That model does not exist or belongs to someone else. Upload it first.")
    basic, advanced = job_form_fields()
    return page(request, "job_form.html.j2", title="New job", tenant=tenant, model=model, basic=basic,
                advanced=advanced)


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, offset: int = 0):
    tenant = bs.signed_in_tenant(request, session)
    if tenant is None:
        return to_signin()
    offset = max(0, min(offset, 10**9))
    rows, count = crud.list_jobs(session, tenant_id=tenant.id, offset=offset, limit=25, status=None, model_id=None)
    models = {}
    for job in rows:
        if job.model_id not in models:
            models[job.model_id] = crud.get_model(session, tenant_id=tenant.id, model_id=job.model_id)
    return page(request, "jobs.html.j2", title="Jobs", tenant=tenant, jobs=rows, models=models, count=count,
                offset=offset, limit=25)


def _job_or_404(request: Request, session, job_id: str):
    tenant = bs.signed_in_tenant(request, session)
    if tenant is None:
        return None, None
    return tenant, crud.get_job(session, tenant_id=tenant.id, job_id=job_id[:64])


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep):
    tenant, job = _job_or_404(request, session, job_id)
    if tenant is None:
        return to_signin()
    if job is None:
        return page(request, "error.html.j2", 404, title="Job not found", tenant=tenant,
                    message="That job does not exist or belongs to someone else.")
    model = crud.get_model(session, tenant_id=tenant.id, model_id=job.model_id)
    return page(request, "job.html.j2", title=f"Job {job.id}", tenant=tenant, job=job, model=model,
                report_css=report_css())


def load_report(job) -> dict | None:
    artifact = next((a for a in job.artifacts if a.name == "report.json"), None)
    if artifact is None:
        return None
    try:
        with get_storage().fetch(artifact.storage_key) as path:
            return json.loads(Path(path).read_text())
    except (StorageError, OSError, ValueError):
        return None


@router.get("/jobs/{job_id}/report")
def job_report_fragment(job_id: str, request: Request, session: SessionDep):
    """The report as an HTML fragment (the same renderer as report.html); the job page inserts it."""
    tenant, job = _job_or_404(request, session, job_id)
    if tenant is None or job is None:
        raise HTTPException(404, "job not found")
    report = load_report(job)
    if report is None:
        raise HTTPException(404, "this job has no report (yet)")
    response = HTMLResponse(render_report_section(report))
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def job_headline(job) -> dict:
    """At-a-glance numbers for the list, from the row's summary (copied from report.json)."""
    summary = job.summary or {}
    return report_summary({"speed": {"speedup_vs_onnxruntime": summary.get("speedup_vs_onnxruntime")},
                           "fidelity": {"top1_agreement": summary.get("top1_agreement")},
                           "sizes": {"model_bytes_after": summary.get("model_bytes_after")}})


TEMPLATES.env.globals["job_headline"] = job_headline
