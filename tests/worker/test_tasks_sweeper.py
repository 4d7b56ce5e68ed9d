"""The sweeper re-sends lost work through the real broker, and leaves jobs that are merely waiting alone."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from app.broker import enqueue_job
from app.config import get_settings
from app.db import new_session, utcnow
from app.models import Job
from worker.sweeper import busy_queues, sweep_once


@pytest.fixture
def redis_settings(worker_db, redis_url, redis_prefix, monkeypatch):
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("ZERODATA_BROKER_KEY_PREFIX", f"{redis_prefix}sweep:")
    get_settings.cache_clear()
    settings = get_settings()
    yield settings
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{redis_prefix}sweep:*"):
        client.delete(key)
    client.close()


def messages(settings, queue="cpu") -> list[str]:
    client = redis.Redis.from_url(settings.broker_url)
    raw = client.lrange(f"{settings.broker_key_prefix}{queue}", 0, -1)
    client.close()
    return [json.loads(m)["headers"]["argsrepr"] for m in raw]


def make_old(job_id):
    with new_session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow() - timedelta(hours=2)))
        session.commit()


def test_lost_message_is_resent_only_when_the_queue_is_empty(redis_settings, queued_job):
    make_old(queued_job)
    enqueue_job("some-other-job", "cpu", redis_settings)
    assert busy_queues(redis_settings) == {"cpu"}
    assert sweep_once(redis_settings) == []  # the queue still has messages: the job is waiting, not lost
    redis.Redis.from_url(redis_settings.broker_url).delete(f"{redis_settings.broker_key_prefix}cpu")
    assert busy_queues(redis_settings) == frozenset()
    assert sweep_once(redis_settings) == [queued_job]
    assert messages(redis_settings) == [repr([queued_job])]


def test_filesystem_broker_queue_sizes(worker_db, tmp_path, monkeypatch):
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.setenv("ZERODATA_HOME", str(tmp_path / "fs-home"))
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.effective_broker_url == "filesystem://"
    assert busy_queues(settings) == frozenset()
    enqueue_job("a-job", "gpu", settings)
    assert busy_queues(settings) == {"gpu"}
