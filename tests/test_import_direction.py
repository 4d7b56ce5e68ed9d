"""The engine and the kernel compiler depend on nobody; the API reaches the worker only by task name."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_modules(package_dir: Path, skip: Path | None = None) -> set[str]:
    found = set()
    for path in package_dir.rglob("*.py"):
        if skip is not None and path.is_relative_to(skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_engine_imports_no_service_code():
    bad = {m for m in imported_top_modules(ROOT / "worker" / "engine")
           if m.split(".")[0] in {"app", "kernels", "celery", "sqlalchemy", "fastapi"}
           or m in {"worker.tasks", "worker.celery_app", "worker.pipeline"}}
    assert not bad, bad


def test_kernels_import_neither_app_nor_worker():
    bad = {m for m in imported_top_modules(ROOT / "kernels") if m.split(".")[0] in {"app", "worker"}}
    assert not bad, bad


def test_api_reaches_worker_only_by_task_name():
    # The CLI is the composition point (it runs the engine locally), so it is exempt.
    app_modules = imported_top_modules(ROOT / "app", skip=ROOT / "app" / "cli")
    pure = ("worker.engine.config", "worker.engine.archive_safety", "worker.report_html", "worker.pipeline_options")
    bad = {m for m in app_modules if m.split(".")[0] == "worker" and not m.startswith(pure)}
    assert not bad, bad
