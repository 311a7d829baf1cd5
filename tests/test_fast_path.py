"""`serving.fastpath` answers /predict and /recommendations in front of FastAPI: it must answer
exactly as the FastAPI routes do, and leave them every request it should not answer (bad input,
errors), so that their 422, 409 and 503 answers keep their form. Checked on one server app with
the fast path and one without, over the same requests, in-process (ASGI calls to the real app,
its stores and event log)."""
import asyncio
import concurrent.futures
import json

import fastavro
import pytest

from pipelines import batch_serve, recommend
from serving import app as serving_app, service
from serving.fastpath import FastPath
from serving.settings import Settings
from stores.toplists import open_toplists

NOW_MS = 1_800_000_000_000
ID_FIELDS = ("request_id", "impression_id")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    out = tmp_path_factory.mktemp("published")
    recommend.run(["--impressions", "600", "--seed", "3", "--output", str(out)])
    batch_serve.run(["--registry", str(out / "registry.sqlite"), "--online_store", str(out / "online.sqlite"),
                     "--store", str(out / "top.sqlite"), "--k", "8"])
    return out


def _requests(user):
    """(method, path, query, body, content type): answered, and not."""
    body = {"user_id": user, "item_id": "i00001", "item_genres": ["drama"], "position": 1}
    get = [("k=5", "source=batch&k=3", "source=live&device=tv", "genres=drama,comedy&genres=family",
            "candidates=brand-new&k=12", "k=4&unknown=1", "k=1&k=2"),
           ("k=0", "k=abc", "source=nope", "genres=" + ",".join(f"g{i}" for i in range(101)), "device=" + "x" * 65)]
    post = [(body, {**body, "device": "tv"}, {**body, "item_genres": []}),
            ({**body, "extra": 1}, {**body, "position": -1}, {"user_id": user}, "not json")]
    rows = [("GET", f"/recommendations/{u}", q, None, None) for u in (user, "someone-new", "a b") for q in get[0] + get[1]]
    rows += [("GET", "/recommendations/" + "u" * 257, "k=5", None, None), ("GET", "/recommendations/a/b", "", None, None)]
    rows += [("POST", "/predict", "", b, "application/json") for b in post[0] + post[1]]
    rows += [("POST", "/predict", "", post[0][0], kind) for kind in ("application/json; charset=utf-8", "text/plain", None)]
    return rows


async def _call(app, method, path, query="", body=None, content_type=None):
    data = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = [(b"host", b"127.0.0.1")] + ([(b"content-length", str(len(data)).encode())] if method == "POST" else [])
    headers += [(b"content-type", content_type.encode())] if content_type else []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def _without_ids(answer):
    if isinstance(answer, dict):
        return {k: _without_ids(v) for k, v in answer.items() if k not in ID_FIELDS}
    return [_without_ids(v) for v in answer] if isinstance(answer, list) else answer


def _answers(published, tmp_path, fast, rows):
    settings = Settings(registry=str(published / "registry.sqlite"), online_store=str(published / "online.sqlite"),
                        event_log=str(tmp_path / f"served-{fast}.avro"), batch_store=str(published / "top.sqlite"),
                        seed=7, epsilon=0.3, cache_s=0)
    app = serving_app.create_app(settings, fast_path=fast)
    answered = []
    for middleware in app.user_middleware:  # counts what the fast path answered itself
        if middleware.cls is FastPath:
            for i, hot in enumerate(middleware.kwargs["hot"]):
                async def counted(request, answer=hot.answer):
                    response = await answer(request)
                    answered.append(response is not None)
                    return response
                middleware.kwargs["hot"][i] = type(hot)(hot.method, hot.path, counted, hot.route)

    async def run():
        async with app.router.lifespan_context(app):
            answers = [await _call(app, *row) for row in rows]
            metrics = app.state.service.metrics.text().decode()
        return answers, metrics

    # On a thread of its own: a test before may have left an event loop running on this one
    # (Playwright's sync API does).
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        answers, metrics = thread.submit(asyncio.run, run()).result()
    with open(tmp_path / f"served-{fast}.avro", "rb") as f:
        logged = [{k: v for k, v in r.items() if k not in ("serve_ms", "event_id")} for r in fastavro.reader(f)]
    return answers, answered, logged, metrics


def test_the_fast_path_answers_as_fastapi_does_and_leaves_it_the_rest(published, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "_now_ms", lambda: NOW_MS)  # features decay with time: both at one time
    user = open_toplists(str(published / "top.sqlite")).users()[0]
    rows = _requests(user)
    fast, answered, fast_log, fast_metrics = _answers(published, tmp_path, True, rows)
    slow, none, slow_log, _ = _answers(published, tmp_path, False, rows)
    assert none == []
    for row, a, b in zip(rows, fast, slow):
        assert a[0] == b[0] and _without_ids(a[1]) == _without_ids(b[1]), row
    statuses = [status for status, _ in fast]
    assert statuses.count(200) == answered.count(True) == 3 * 7 + 3 + 1  # the valid ones: by the fast path
    assert {s for s in statuses if s != 200} == {404, 422}  # 404: a user id with a slash
    assert {a[1]["source"] for a in fast if "source" in a[1]} == {"batch", "live"}
    assert fast_log == slow_log and len(fast_log) > 100  # the same impressions logged; none for a refusal
    assert 'streamml_requests_total{route="/recommendations/{user_id}",status="200"} 21.0' in fast_metrics
    assert 'streamml_requests_total{route="/predict",status="200"} 4.0' in fast_metrics
