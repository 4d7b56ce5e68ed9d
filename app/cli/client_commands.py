"""`zerodata submit/status/download/jobs`: the CI client for a running zerodata server.

Exit codes (also in `zerodata submit --help`): 0 success, 1 job failed or canceled, 2 bad command
line, 3 authentication failed, 4 server unreachable, 5 timeout, 6 server refused the request,
7 a quality gate was missed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from worker.engine.config import DEFAULT_TIME_BUDGET_S

EXIT_CODES_HELP = ("\b\nExit codes: 0 ok, 1 job failed or canceled, 2 bad command line, 3 authentication failed, "
                   "4 server unreachable, 5 timeout, 6 request refused by the server, 7 quality gate missed.")

server_option = click.option("--server", envvar="ZERODATA_URL", metavar="URL", show_envvar=True,
                             help="Base URL of the zerodata server, e.g. https://zerodata.example.com")
key_option = click.option("--api-key", envvar="ZERODATA_API_KEY", metavar="KEY", show_envvar=True,
                          help="API key (prefer the environment variable: command lines leak into logs).")
timeout_option = click.option("--http-timeout", type=float, default=60.0, show_default=True,
                              help="Seconds to wait for each HTTP answer.")


def _fail(exc) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _client(server, api_key, http_timeout):
    from app.client import ZerodataClient

    return ZerodataClient(server, api_key, timeout=http_timeout)


def _config_from_options(options: dict, overrides: tuple[str, ...]) -> dict:
    """Only options the user gave: every other field keeps the server's (the engine's) default."""
    config = {key: value for key, value in options.items() if value is not None}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--set")
        try:
            config[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            config[key.strip().replace("-", "_")] = raw
    return config


def check_gates(report: dict, model_bytes: int | None, *, min_speedup, min_agreement, max_size_mb) -> list[str]:
    """Messages for every missed gate; a gate on a number the report does not have is missed too."""
    from worker.report_html import report_summary

    summary, missed = report_summary(report), []
    if min_speedup is not None:
        speedup = summary["speedup_vs_onnxruntime"]
        if speedup is None:
            missed.append("speed gate: the report has no speed measurement (was --no-compile/--no-measure used?)")
        elif speedup < min_speedup:
            missed.append(f"speed gate: {speedup:.2f}x vs dense ONNX Runtime at batch 1 is below --min-speedup {min_speedup}")
    if min_agreement is not None:
        agreement = summary["top1_agreement"]
        fidelity = report.get("fidelity")
        warning = fidelity.get("warning") if isinstance(fidelity, dict) else None
        if agreement is None:
            missed.append("fidelity gate: the report has no top-1 agreement")
        elif warning:  # e.g. measured on gaussian noise: it reads ~0.97 where real data reads ~0.6
            missed.append(f"fidelity gate: the agreement cannot be gated on: {warning}")
        elif agreement < min_agreement:
            missed.append(f"fidelity gate: top-1 agreement {agreement:.4f} is below --min-agreement {min_agreement}")
    if max_size_mb is not None:
        size = summary["model_bytes_after"] if summary["model_bytes_after"] is not None else model_bytes
        if size is None:
            missed.append("size gate: the size of the compressed model is unknown")
        elif size / 1e6 > max_size_mb:
            missed.append(f"size gate: compressed model is {size / 1e6:.2f} MB, above --max-size-mb {max_size_mb}")
    return missed


class JobProgressBar:
    """Draws the server's progress with the engine's tqdm bar (one bar per stage)."""

    def __init__(self, quiet: bool):
        from app.cli.progress_bar import TqdmProgress

        self.bar, self.last_status = TqdmProgress(disable=quiet), None
        self.quiet = quiet

    def __call__(self, job: dict) -> None:
        progress = job.get("progress") or {}
        if job["status"] != self.last_status and not self.quiet:
            self.bar.close()
            click.echo(f"job {job['id']}: {job['status']}", err=True)
            self.last_status = job["status"]
        if job["status"] == "running" and progress.get("stage") and progress.get("total"):
            self.bar.update(progress["stage"], progress.get("done", 0), progress["total"], progress.get("detail") or "")

    def close(self) -> None:
        self.bar.close()


def _download_all(client, job_id: str, out_dir: Path, quiet: bool) -> list[Path]:
    paths = []
    for artifact in client.list_artifacts(job_id):
        paths.append(client.download_artifact(job_id, artifact["name"], out_dir))
        if not quiet:
            click.echo(f"downloaded {paths[-1]} ({artifact.get('size_bytes', 0)} bytes)", err=True)
    return paths


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_option
@key_option
@click.option("--entries", type=int, help="Weights kept per 3x3 kernel (server default 4).")
@click.option("--library-size", type=int, help="Number of patterns in the library (default 8).")
@click.option("--connectivity", type=float,
              help="Fraction of whole 3x3 kernels removed, in [0, 1) (--set connectivity_allocation=flops|weights|"
                   "uniform says how they are chosen).")
@click.option("--target-compression", type=float, help="Overall 3x3-conv compression ratio instead of --connectivity.")
@click.option("--synthetic", type=click.Choice(["bn-inversion", "gaussian"]), help="How synthetic inputs are made.")
@click.option("--synthetic-samples", type=int, help="Number of synthetic inputs.")
@click.option("--synthetic-steps", type=int, help="Optimisation steps for the synthetic inputs.")
@click.option("--recovery-steps", type=int, help="Data-free recovery steps after pruning.")
@click.option("--time-budget", "time_budget_s", type=float, help=f"Wall-clock budget for the compression stage, seconds (server default {DEFAULT_TIME_BUDGET_S:.0f}; "
                   "the worker caps it at its task time limit).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Where the job runs (cuda: GPU queue).")
@click.option("--seed", type=int)
@click.option("--compile/--no-compile", "compile_", default=None, help="Build the compiled sparse package.")
@click.option("--measure/--no-measure", default=None, help="Time dense vs sparse (needed for --min-speedup).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Any other job config field (JSON value).")
@click.option("--webhook-url", help="Called with an HMAC-signed POST when the job ends (server allow-list applies).")
@click.option("--wait/--no-wait", default=False, help="Wait for the job, download artifacts and apply the gates.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("zerodata-out"),
              show_default=True, help="Folder for the downloaded artifacts (with --wait).")
@click.option("--min-speedup", type=float, help="Gate: compiled sparse vs dense ONNX Runtime at batch 1, e.g. 1.3.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), help="Gate: top-1 agreement on synthetic inputs, e.g. 0.95.")
@click.option("--max-size-mb", type=float, help="Gate: compressed model size in MB.")
@click.option("--delete-after", is_flag=True,
              help="With --wait: once the job has ended (and its artifacts are downloaded), erase the uploaded model "
                   "and the job from the server (only the job when other jobs still use the model).")
@click.option("--wait-timeout", type=float, default=None, help="Give up waiting after this many seconds (exit 5).")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between status checks.")
@timeout_option
@click.option("--quiet", is_flag=True, help="No progress output; only the final line.")
def submit(model, server, api_key, entries, library_size, connectivity, target_compression, synthetic,
           synthetic_samples, synthetic_steps, recovery_steps, time_budget_s, device, seed, compile_, measure,
           overrides, webhook_url, wait, out_dir, min_speedup, min_agreement, max_size_mb, delete_after, wait_timeout,
           poll, http_timeout, quiet) -> None:
    """Upload MODEL, start a compression job and (with --wait) gate on its report."""
    from app.cli.model_file import self_contained
    from app.client import EXIT_GATE, EXIT_JOB_FAILED, ClientError

    config = _config_from_options(dict(
        entries=entries, library_size=library_size, connectivity=connectivity, target_compression=target_compression,
        synthetic=synthetic, synthetic_samples=synthetic_samples, synthetic_steps=synthetic_steps,
        recovery_steps=recovery_steps, time_budget_s=time_budget_s, device=device, seed=seed, compile=compile_,
        measure=measure), overrides)
    if not wait and any(g is not None for g in (min_speedup, min_agreement, max_size_mb)):
        raise click.UsageError("--min-speedup/--min-agreement/--max-size-mb need --wait")
    if delete_after and not wait:
        raise click.UsageError("--delete-after needs --wait")
    bar = None
    try:
        with _client(server, api_key, http_timeout) as client:
            with self_contained(model) as model_file:
                uploaded = _upload_with_bar(client, model_file, quiet)
            job = client.create_job(uploaded["id"], config, webhook_url)
            click.echo(f"job {job['id']} created on model {uploaded['id']} ({uploaded.get('format')})", err=True)
            if not wait:
                click.echo(job["id"])
                return
            bar = JobProgressBar(quiet)
            job = client.wait_for_job(job["id"], on_update=bar, poll_s=poll, timeout_s=wait_timeout)
            bar.close()
            if job["status"] != "succeeded":
                click.echo(f"error: job {job['id']} {job['status']}: {job.get('error') or 'no reason given'}", err=True)
                if delete_after:
                    _erase(client, job)
                sys.exit(EXIT_JOB_FAILED)
            paths = _download_all(client, job["id"], out_dir, quiet)
            if delete_after:
                _erase(client, job)
    except ClientError as exc:
        if bar:
            bar.close()
        _fail(exc)
    report_path = out_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    model_file = next((p for p in paths if p.name.startswith("model.")), None)
    missed = check_gates(report, model_file.stat().st_size if model_file else None, min_speedup=min_speedup,
                         min_agreement=min_agreement, max_size_mb=max_size_mb)
    _print_headline(report, out_dir)
    if missed:
        for message in missed:
            click.echo(f"gate missed: {message}", err=True)
        sys.exit(EXIT_GATE)


def _erase(client, job: dict) -> None:
    """The model with its jobs; only this job when the model is busy with others (e.g. parallel CI runs that
    uploaded the same file share one model)."""
    from app.client import RefusedError

    try:
        client.delete_model(job["model_id"])
        click.echo(f"deleted model {job['model_id']} and its jobs from the server", err=True)
    except RefusedError as exc:
        if exc.status_code != 409:
            raise
        client.delete_job(job["id"])
        click.echo(f"deleted job {job['id']}; model {job['model_id']} kept: other jobs still use it", err=True)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("ids", nargs=-1, required=True)
@click.option("--model", "models", is_flag=True, help="The ids are models: erase each with every job run on it.")
@server_option
@key_option
@timeout_option
def delete(ids, models, server, api_key, http_timeout) -> None:
    """Erase jobs (results and records) from the server, or with --model uploaded models and all their jobs.
    Queued or running jobs must be canceled first."""
    from app.client import ClientError

    try:
        with _client(server, api_key, http_timeout) as client:
            for item in ids:
                (client.delete_model if models else client.delete_job)(item)
                click.echo(f"deleted {'model' if models else 'job'} {item}")
    except ClientError as exc:
        _fail(exc)


def _upload_with_bar(client, model: Path, quiet: bool) -> dict:
    from tqdm import tqdm

    with tqdm(total=model.stat().st_size, unit="B", unit_scale=True, desc="    upload", disable=quiet,
              file=sys.stderr, leave=False) as bar:
        return client.upload_model(model, on_bytes=bar.update)


def _print_headline(report: dict, out_dir: Path) -> None:
    from worker.report_html import report_summary

    s = report_summary(report)
    speed = f"{s['speedup_vs_onnxruntime']:.2f}x vs ONNX Runtime" if s["speedup_vs_onnxruntime"] else "speed not measured"
    agreement = f"top-1 agreement {s['top1_agreement']:.4f}" if s["top1_agreement"] is not None else "agreement not measured"
    click.echo(f"succeeded: {speed}, {agreement}; artifacts in {out_dir}/")


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@server_option
@key_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status(job_id, server, api_key, http_timeout, as_json) -> None:
    """Show one job: status, progress, error, headline numbers."""
    from app.client import ClientError

    try:
        with _client(server, api_key, http_timeout) as client:
            job = client.get_job(job_id)
    except ClientError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    p = job.get("progress") or {}
    click.echo(f"{job['id']}  {job['status']}  model {job['model_id']}")
    if job["status"] in ("queued", "running"):
        eta = f", ETA {p['eta_seconds']:.0f} s" if p.get("eta_seconds") else ""
        click.echo(f"  {p.get('stage') or 'waiting'} {p.get('done', 0)}/{p.get('total', 0)} ({p.get('percent', 0):.0f}%){eta}"
                   f" {p.get('detail') or ''}".rstrip())
    if job.get("error"):
        click.echo(f"  error: {job['error']}")
    for key, value in (job.get("summary") or {}).items():
        click.echo(f"  {key}: {value}")


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@server_option
@key_option
@timeout_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("zerodata-out"),
              show_default=True)
@click.option("--name", "names", multiple=True, help="Only these artifacts (repeatable), e.g. --name report.html")
def download(job_id, server, api_key, http_timeout, out_dir, names) -> None:
    """Download a finished job's artifacts into --out."""
    from app.client import ClientError

    try:
        with _client(server, api_key, http_timeout) as client:
            available = [a["name"] for a in client.list_artifacts(job_id)]
            if not available:
                raise ClientError(f"job {job_id} has no artifacts (it has not succeeded)")
            unknown = [n for n in names if n not in available]
            if unknown:
                raise ClientError(f"job {job_id} has no artifact {', '.join(unknown)}; it has {', '.join(available)}")
            for name in names or available:
                click.echo(client.download_artifact(job_id, name, out_dir))
    except ClientError as exc:
        _fail(exc)


@click.command(epilog=EXIT_CODES_HELP)
@server_option
@key_option
@timeout_option
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--status", "status_filter", type=click.Choice(["queued", "running", "succeeded", "failed", "canceled"]))
def jobs(server, api_key, http_timeout, limit, offset, status_filter) -> None:
    """List recent jobs with speedup and fidelity at a glance."""
    from app.client import ClientError

    try:
        with _client(server, api_key, http_timeout) as client:
            page = client.list_jobs(offset=offset, limit=limit, status=status_filter)
    except ClientError as exc:
        _fail(exc)
    click.echo(f"{'job':<34} {'status':<10} {'speedup':>8} {'top-1':>7}  model")
    for job in page["data"]:
        s = job.get("summary") or {}
        speed = f"{s['speedup_vs_onnxruntime']:.2f}x" if isinstance(s.get("speedup_vs_onnxruntime"), (int, float)) else "-"
        agree = f"{s['top1_agreement']:.3f}" if isinstance(s.get("top1_agreement"), (int, float)) else "-"
        click.echo(f"{job['id']:<34} {job['status']:<10} {speed:>8} {agree:>7}  {job['model_id']}")
    click.echo(f"{len(page['data'])} of {page['count']} jobs", err=True)


COMMANDS: list = [submit, status, download, jobs, delete]
