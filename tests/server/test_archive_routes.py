"""Export and import over HTTP (GET /v1/memories/export, POST /v1/memories/import): a user's memory
moves to a second, empty server and back out byte for byte; damaged archives, another model's
states, existing sessions, other users and oversized uploads are refused with nothing written."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from deltamem_agents import DeltaMemConfig
from deltamem_agents.cli._runtime import state_digest
from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.server import close_app, create_app
from deltamem_agents.session import SessionKey
from tests.memory.hashing import HashingEmbedding
from tests.server.conftest import API_KEYS, client_for, make_runtime, settings
from tests.tiny_models import tiny_runtime

pytestmark = pytest.mark.anyio

ALICE, BOB = (f"Bearer {key}" for key in API_KEYS)
ZIP = {"Content-Type": "application/zip"}


@pytest.fixture
def make_server(tmp_path):
    """``make_server(runtime, **settings)`` -> an app with its own text log (closed after the test)."""
    built: list[tuple[object, TextLog]] = []

    def build(runtime, **fields):
        log = TextLog(TextLogConfig(path=tmp_path / f"log{len(built)}"), embedding_function=HashingEmbedding())
        memory = HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()]))
        app = create_app(settings(api_keys=API_KEYS, **fields), memory=memory)
        built.append((app, log))
        return app

    yield build
    for app, log in built:
        close_app(app)
        log.close()


@pytest.fixture
def source(make_server, runtime):
    return make_server(runtime)


@pytest.fixture
def empty(make_server, chat_tokenizer, tmp_path):
    """A second server on the same tiny model, with an empty store and an empty text log."""
    return make_server(make_runtime(chat_tokenizer, tmp_path / "store-empty"))


async def remember(app) -> list[str]:
    async with client_for(app, Authorization=ALICE) as http:
        pets = await http.post("/v1/memories", json={"session_id": "pets", "text": "My ferret is Tomas.", "metadata": {"topic": "pets"}})
        home = await http.post("/v1/memories", json={"session_id": "home", "messages": [
            {"role": "user", "content": "I live in Oslo."}, {"role": "assistant", "content": "Noted, Oslo."},
        ]})
    assert pets.status_code == home.status_code == 200, (pets.text, home.text)
    return pets.json()["ids"] + home.json()["ids"]


async def export(app, auth: str = ALICE, **params):
    async with client_for(app, Authorization=auth) as http:
        return await http.get("/v1/memories/export", params=params)


async def upload(app, data: bytes, auth: str = ALICE, headers: dict | None = None, **params):
    async with client_for(app, Authorization=auth) as http:
        return await http.post("/v1/memories/import", content=data, headers=headers or ZIP, params=params)


def held(app, user_id: str = "alice") -> tuple:
    """Everything an import could write for a user: sessions (messages, state) and log entries."""
    memory = app.state.context.memory
    sessions = []
    for meta in memory.runtime.sessions(user_id):
        record = memory.runtime.store.load(meta.key)
        sessions.append((str(meta.key), [m.content for m in record.messages], state_digest(record.state)))
    return sessions, sorted(h.id for h in memory.textlog.list(user_id=user_id))


async def test_export_then_import_into_an_empty_server_round_trips(source, empty):
    ids = await remember(source)
    out = await export(source)
    assert out.status_code == 200, out.text
    data = out.content
    assert out.headers["content-type"] == "application/zip"
    assert out.headers["content-disposition"] == 'attachment; filename="deltamem-alice.zip"'
    assert out.headers["x-archive-sha256"] == hashlib.sha256(data).hexdigest()
    assert out.headers["x-archive-sessions"] == "2"
    assert zipfile.ZipFile(io.BytesIO(data)).namelist()[0] == "manifest.json"

    imported = await upload(empty, data)
    assert imported.status_code == 200, imported.text
    report = imported.json()
    assert report["sessions"] == ["alice/home", "alice/pets"] and report["messages"] == 3
    assert report["log_entries"] == 3 and report["replayed"] is False and report["replaced"] == []
    assert report["source"] == f"upload sha256:{hashlib.sha256(data).hexdigest()}" and report["store"] == "server"

    again = await export(empty)
    assert again.status_code == 200 and again.content == data  # byte-identical
    assert held(empty) == held(source)
    async with client_for(source, Authorization=ALICE) as a, client_for(empty, Authorization=ALICE) as b:
        before, after = (await a.get("/v1/memories")).json(), (await b.get("/v1/memories")).json()
        one = await b.get(f"/v1/memories/{ids[0]}")
    assert after == before and sorted(m["id"] for m in after["data"]) == sorted(ids)
    assert one.status_code == 200 and one.json()["metadata"] == {"topic": "pets"}

    pets = await export(source, session_id="pets")
    assert pets.status_code == 200 and pets.headers["x-archive-sessions"] == "1"
    assert pets.headers["content-disposition"] == 'attachment; filename="deltamem-alice-pets.zip"'


async def test_a_damaged_archive_is_refused_and_nothing_is_written(source, empty):
    await remember(source)
    data = (await export(source)).content
    assert b"Tomas" in data
    damaged = {
        "modified": data.replace(b"Tomas", b"Tomaz"),
        "truncated": data[: len(data) // 2],
        "not a zip": b"PK this is not an archive",
    }
    answers = {name: await upload(empty, blob) for name, blob in damaged.items()}
    empty_body = await upload(empty, b"")
    wrong_type = await upload(empty, data, headers={"Content-Type": "application/json"})
    bad_sum = await upload(empty, data, headers={**ZIP, "X-Archive-SHA256": hashlib.sha256(b"other").hexdigest()})
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "archive_corrupt" and "nothing was imported" in error["message"], name
        assert "the uploaded archive" in error["message"] and "<bytes>" not in error["message"]
    assert empty_body.status_code == 400 and "empty" in empty_body.json()["error"]["message"]
    assert wrong_type.status_code == 415 and "application/zip" in wrong_type.json()["error"]["message"]
    assert bad_sum.status_code == 400 and bad_sum.json()["error"]["code"] == "checksum_mismatch"
    assert held(empty) == ([], [])
    # the right checksum header is accepted
    ok = await upload(empty, data, headers={**ZIP, "X-Archive-SHA256": hashlib.sha256(data).hexdigest()})
    assert ok.status_code == 200, ok.text


async def test_existing_sessions_are_refused_unless_force(source, runtime):
    await remember(source)
    data = (await export(source)).content
    before = held(source)
    refused = await upload(source, data)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "archive_conflict" and "?force=true" in error["message"]
    assert runtime.store.location not in error["message"]  # the server's folder is not the caller's business
    assert held(source) == before
    forced = await upload(source, data, force="true")
    assert forced.status_code == 200, forced.text
    assert forced.json()["replaced"] == ["alice/home", "alice/pets"]
    assert held(source) == before and (await export(source)).content == data


async def test_another_models_archive_is_refused_unless_replayed(source, make_server, chat_tokenizer, tmp_path):
    await remember(source)
    data = (await export(source)).content
    other = make_server(tiny_runtime(chat_tokenizer, tmp_path / "store-rank4", config=DeltaMemConfig(rank=4)))
    refused = await upload(other, data)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "archive_mismatch" and "?replay=true" in error["message"] and "another model" in error["message"]
    assert held(other) == ([], [])
    replayed = await upload(other, data, replay="true")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] is True
    runtime = other.state.context.memory.runtime
    record = runtime.store.load(SessionKey(user_id="alice", session_id="home"))
    assert [m.content for m in record.messages] == ["I live in Oslo.", "Noted, Oslo."]
    assert record.fingerprint == runtime.fingerprint and record.state is not None
    assert record.state.rank == 4  # written anew by this server's model


async def test_each_key_exports_and_imports_only_its_own_user(source, empty):
    await remember(source)
    data = (await export(source)).content
    own = await export(source, user_id="alice")
    other_user = await export(source, BOB, user_id="alice")
    nothing = await export(source, BOB)
    no_session = await export(source, session_id="nope")
    bad_session = await export(source, session_id="../etc")
    foreign = await upload(empty, data, BOB)
    async with client_for(source) as anonymous:
        no_key_export = await anonymous.get("/v1/memories/export")
        no_key_import = await anonymous.post("/v1/memories/import", content=data, headers=ZIP)
    assert own.status_code == 200 and own.content == data
    assert other_user.status_code == 403 and other_user.json()["error"]["type"] == "permission_error"
    assert "'bob'" in other_user.json()["error"]["message"]
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "nothing_to_export"
    assert no_session.status_code == 404 and "alice/nope" in no_session.json()["error"]["message"]
    assert bad_session.status_code == 400
    assert foreign.status_code == 403 and "'alice'" in foreign.json()["error"]["message"]
    assert no_key_export.status_code == 401 and no_key_import.status_code == 401
    assert held(empty, "alice") == ([], []) and held(empty, "bob") == ([], [])


async def test_an_upload_over_the_body_limit_is_413(make_server, source, chat_tokenizer, tmp_path):
    await remember(source)
    data = (await export(source)).content
    small = make_server(make_runtime(chat_tokenizer, tmp_path / "store-small"), max_request_bytes=1024)
    assert len(data) > 1024
    answer = await upload(small, data)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"
    assert held(small) == ([], [])


async def test_a_cross_origin_page_can_read_the_export_headers(make_server, runtime):
    """A browser hides response headers from page scripts unless CORS exposes them: the export's
    checksum and file name must be readable by an allowed origin's page."""
    origin = "https://app.example.com"
    app = make_server(runtime, cors_origins=[origin])
    await remember(app)
    out = await export_from(app, Origin=origin)
    assert out.status_code == 200, out.text
    assert out.headers["access-control-allow-origin"] == origin
    exposed = {h.strip().lower() for h in out.headers["access-control-expose-headers"].split(",")}
    assert {"x-archive-sha256", "content-disposition", "x-archive-sessions"} <= exposed
    assert out.headers["x-archive-sha256"] == hashlib.sha256(out.content).hexdigest()

    # an import that carries the checksum header passes the browser's preflight
    async with client_for(app) as http:
        preflight = await http.options("/v1/memories/import", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-archive-sha256",
        })
    assert preflight.status_code == 200, preflight.text
    assert "x-archive-sha256" in preflight.headers["access-control-allow-headers"].lower()

    # another origin is not allowed: without allow-origin the browser shows the page nothing
    other = await export_from(app, Origin="https://evil.example.com")
    assert "access-control-allow-origin" not in other.headers


async def export_from(app, **headers):
    async with client_for(app, Authorization=ALICE, **headers) as http:
        return await http.get("/v1/memories/export")
