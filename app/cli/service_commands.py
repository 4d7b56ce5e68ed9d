"""`zerodata serve` (API + one worker on embedded defaults) and `zerodata keys create|list|revoke`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import click

COMMANDS: list = []


def _prepare_database() -> str:
    from app.config import get_settings
    from app.migrate import upgrade_database

    settings = get_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.effective_database_url)
    return settings.effective_database_url


def _new_key(tenant: str) -> str:
    from app.auth import create_api_key
    from app.db import new_session

    with new_session() as session:
        _, key = create_api_key(session, tenant_name=tenant)
    return key


def worker_command(queues: str = "cpu,gpu", name: str = "zerodata-embedded@%h") -> list[str]:
    """The same Celery worker the production deployment runs, one process at a time."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
            "--concurrency", "1", "--loglevel", "INFO", "-n", name, "--without-mingle", "--without-gossip"]


def _die_with_parent() -> None:
    """Runs in the worker before exec: if `serve` dies, even by SIGKILL, the worker gets SIGTERM."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the signal forwarding in serve still applies
        pass


def _start_worker() -> subprocess.Popen:
    return subprocess.Popen(worker_command(), env=os.environ.copy(), preexec_fn=_die_with_parent)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # warm shutdown: a running job finishes its current step
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="start one Celery worker with the API (embedded mode)")
@click.option("--create-key/--no-create-key", default=True, show_default=True,
              help="create and print a fresh API key for --tenant")
@click.option("--tenant", default="local", show_default=True)
def serve(host: str, port: int, worker: bool, create_key: bool, tenant: str) -> None:
    """Start the API (and a worker). With no DATABASE_URL / BROKER_URL / STORAGE_URL set, everything
    lives under .zerodata/ (or ZERODATA_HOME): a SQLite file, a local folder and a filesystem broker."""
    import uvicorn

    from app.config import get_settings

    settings = get_settings()
    database = _prepare_database()
    click.echo(f"database: {database.split('@')[-1]}", err=True)
    click.echo(f"storage:  {settings.effective_storage_url}", err=True)
    worker_process = _start_worker() if worker else None

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # uvicorn re-raises the signal after its shutdown, so `finally` may never run: tell the worker now.
            if worker_process is not None and worker_process.poll() is None:
                worker_process.send_signal(signal.SIGTERM)
            super().handle_exit(sig, frame)

    url = f"http://{host}:{port}"
    click.echo(f"zerodata is listening on {url}  (API docs: {url}/docs)")
    if create_key:
        click.echo(f"API key for tenant '{tenant}': {_new_key(tenant)}")
        click.echo(f"try:  curl -H 'Authorization: Bearer <key>' {url}/v1/jobs")
    try:
        Server(uvicorn.Config("app.main:create_app", factory=True, host=host, port=port, log_level="info")).run()
    finally:
        if worker_process is not None:
            _stop(worker_process)


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="tenant name (created if new)")
def keys_create(tenant: str) -> None:
    """Print a new API key for TENANT (shown once; only its hash is stored)."""
    tenant = tenant.strip()
    if not tenant or len(tenant) > 200:
        raise click.BadParameter("tenant name must be 1-200 characters", param_hint="--tenant")
    _prepare_database()
    click.echo(_new_key(tenant))


@keys.command("list")
@click.option("--tenant", default=None, help="only this tenant's keys")
def keys_list(tenant: str | None) -> None:
    """List keys: id, prefix, tenant, created, revoked (the keys themselves are never stored)."""
    from app.auth import list_api_keys
    from app.db import new_session

    _prepare_database()
    with new_session() as session:
        rows = list_api_keys(session, tenant_name=tenant)
        for key in rows:
            revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "active"
            click.echo(f"{key.id}  {key.prefix}...  {key.tenant.name}  "
                       f"{key.created_at.strftime('%Y-%m-%d %H:%M:%S')}  {revoked}")
    if not rows:
        click.echo("no API keys" + (f" for tenant '{tenant}'" if tenant else ""), err=True)


@keys.command("revoke")
@click.argument("key_id_or_prefix")
def keys_revoke(key_id_or_prefix: str) -> None:
    """Revoke a key by its id or prefix (from 'zerodata keys list'); it stops working at once."""
    from app.auth import revoke_api_key
    from app.db import new_session

    _prepare_database()
    with new_session() as session:
        try:
            key = revoke_api_key(session, key_id_or_prefix)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"revoked {key.prefix}... (tenant '{key.tenant.name}')")


COMMANDS.extend([serve, keys])
