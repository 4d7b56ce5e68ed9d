"""`zerodata keys create`: migrates, prints only a working key; refuses bad tenant names."""
from __future__ import annotations

from click.testing import CliRunner

from app.auth import tenant_for_key
from app.cli import main
from app.db import new_session


def test_keys_create_prints_a_working_key(settings_env):
    result = CliRunner().invoke(main, ["keys", "create", "--tenant", "ci-team"])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("zd_") and len(key) > 40 and "\n" not in key
    with new_session() as session:
        assert tenant_for_key(session, key).name == "ci-team"
    second = CliRunner().invoke(main, ["keys", "create", "--tenant", "ci-team"]).output.strip()
    with new_session() as session:
        assert second != key and tenant_for_key(session, second).id == tenant_for_key(session, key).id


def test_keys_create_refuses_bad_tenant_names(settings_env):
    for name in ("", "   ", "x" * 201):
        result = CliRunner().invoke(main, ["keys", "create", "--tenant", name])
        assert result.exit_code != 0 and "tenant name" in result.output
    assert CliRunner().invoke(main, ["keys", "create"]).exit_code != 0


def test_sqlite_home_is_created_by_keys_create(tmp_path, monkeypatch):
    from app.config import get_settings

    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZERODATA_HOME", str(tmp_path / "fresh-home"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["keys", "create", "--tenant", "local"])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "fresh-home" / "zerodata.db").is_file()
    finally:
        get_settings.cache_clear()


def test_keys_list_and_revoke(settings_env):
    runner = CliRunner()
    keep = runner.invoke(main, ["keys", "create", "--tenant", "revokers"]).output.strip()
    drop = runner.invoke(main, ["keys", "create", "--tenant", "revokers"]).output.strip()
    listed = runner.invoke(main, ["keys", "list", "--tenant", "revokers"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2 and all("active" in line for line in lines)
    assert keep not in listed.output and drop not in listed.output  # only prefixes, never the keys
    drop_id = next(line.split()[0] for line in lines if drop[:11] in line)
    result = runner.invoke(main, ["keys", "revoke", drop_id])
    assert result.exit_code == 0 and "revoked" in result.output
    with new_session() as session:
        assert tenant_for_key(session, drop) is None
        assert tenant_for_key(session, keep).name == "revokers"
    relisted = runner.invoke(main, ["keys", "list", "--tenant", "revokers"]).output
    assert relisted.count("active") == 1
    assert runner.invoke(main, ["keys", "revoke", drop_id]).exit_code == 0  # twice: still revoked, no error


def test_keys_revoke_refuses_unknown_and_ambiguous(settings_env):
    runner = CliRunner()
    unknown = runner.invoke(main, ["keys", "revoke", "zd_nothere"])
    assert unknown.exit_code == 1 and "no API key" in unknown.output
    assert runner.invoke(main, ["keys", "revoke", "' OR 1=1 --"]).exit_code == 1
    empty = runner.invoke(main, ["keys", "list", "--tenant", "nobody-has-this-name"])
    assert empty.exit_code == 0 and "no API keys" in empty.output
