"""Every exception class the SDK defines is rooted on `DeltaMemError`, and the faces map its
branch the same way (HTTP status on the server, exit code in the CLI)."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

import pytest

import deltamem_agents
from deltamem_agents.errors import (
    ConflictError,
    DeltaMemError,
    NotFoundError,
    UnavailableError,
    UserError,
    exit_code_of,
    http_status_of,
)


def _sdk_modules() -> list[object]:
    modules = []
    for info in pkgutil.walk_packages(deltamem_agents.__path__, prefix="deltamem_agents."):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:  # an optional extra (mcp, redis, chromadb...) that is not installed
            continue
    return modules


@functools.cache
def _sdk_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in the SDK (warnings are not errors: they keep `Warning`)."""
    found: dict[str, type[BaseException]] = {}
    for module in _sdk_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseException)
                and not issubclass(obj, Warning)
                and obj.__module__.startswith("deltamem_agents")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_the_walk_finds_the_sdk_errors() -> None:
    names = {name.rsplit(".", 1)[1] for name in _sdk_exceptions()}
    assert {"SessionError", "SessionNotFoundError", "InvalidSessionIdError", "TextLogError", "AdapterError"} <= names


@pytest.mark.parametrize("name", sorted(_sdk_exceptions()))
def test_every_sdk_exception_is_a_deltamem_error(name: str) -> None:
    assert issubclass(_sdk_exceptions()[name], DeltaMemError), f"{name} is not rooted on DeltaMemError"


def test_builtin_bases_are_kept() -> None:
    from deltamem_agents.session.session import SessionError
    from deltamem_agents.store.base import SessionLockTimeout
    from deltamem_agents.store.records import InvalidSessionIdError

    assert issubclass(SessionError, ValueError) and issubclass(InvalidSessionIdError, ValueError)
    assert issubclass(SessionLockTimeout, TimeoutError)


def test_branches_carry_status_and_exit_code() -> None:
    from deltamem_agents.memory.textlog import TextLogUnavailableError
    from deltamem_agents.store.base import (
        SessionExistsError,
        SessionLockTimeout,
        SessionNotFoundError,
    )

    assert (http_status_of(UserError("x")), exit_code_of(UserError("x"))) == (400, 2)
    assert http_status_of(NotFoundError("x")) == 404 and http_status_of(ConflictError("x")) == 409
    assert http_status_of(UnavailableError("x")) == 503 and exit_code_of(DeltaMemError("x")) == 1
    assert http_status_of(RuntimeError("x")) == 500 and exit_code_of(RuntimeError("x")) == 1
    assert http_status_of(SessionNotFoundError("x")) == 404
    assert http_status_of(SessionExistsError("x")) == 409
    assert http_status_of(SessionLockTimeout("x")) == 503  # busy: retry, not refused
    assert http_status_of(TextLogUnavailableError("x")) == 503


def test_a_user_error_maps_to_its_status_on_the_server() -> None:
    pytest.importorskip("fastapi")
    from deltamem_agents.server.errors import as_api_error
    from deltamem_agents.store.records import InvalidSessionIdError

    error = as_api_error(InvalidSessionIdError("bad id 'a b'"))
    assert error is not None
    assert (error.status, error.code, error.message) == (400, "invalid_id", "bad id 'a b'")

    class NewUserError(UserError):
        """A branch member no face names: it still maps by its class's status."""

    unnamed = as_api_error(NewUserError("fix this"))
    assert unnamed is not None and (unnamed.status, unnamed.type) == (400, "invalid_request_error")
    assert as_api_error(DeltaMemError("internal")) is None  # a server bug stays a bare 500


def test_a_user_error_maps_to_its_exit_code_in_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from deltamem_agents.cli._common import user_errors
    from deltamem_agents.store.records import InvalidSessionIdError

    @user_errors
    def command(exc: BaseException) -> None:
        raise exc

    with pytest.raises(typer.Exit) as caught:
        command(InvalidSessionIdError("bad id\n  use a-z"))
    assert caught.value.exit_code == 2
    assert "bad id use a-z" in capsys.readouterr().err

    with pytest.raises(typer.Exit) as caught:
        command(UnavailableError("the server does not answer"))
    assert caught.value.exit_code == 1
