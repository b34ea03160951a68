"""LangChain's standard test-suite for chat models (``langchain-tests``).

The unit suite runs as it is: it builds models but never loads a backbone. The integration
suite runs on the real embedded backbone, SmolLM2-135M-Instruct, with short replies. That model
is tiny and untuned for tools: it never writes a ``<tool_call>`` block and does not reliably
answer in JSON, so the standard tests that need a model to *decide* to call a tool or to fill
a schema are expected failures here (``xfail(strict=True)``, so a backbone that passes them is
noticed). The machinery under them (tool schemas in the prompt, call parsing, ``ToolMessage``
round trips, JSON extraction, validation and repair) is tested with scripted replies in
test_chat_models.py and test_structured_output.py.

``test_serdes`` (unit) is an expected failure too: langchain-core 1.x loads with
``allowed_objects="all"`` only the classes of its own mapping of LangChain packages. A
DeltaMemLLM dumps, and loads back with ``allowed_objects=[DeltaMemLLM]`` (tested in
test_chat_models.py).

Skipped by the suite itself, by our settings:
- model override per call (``supports_model_override = False``): one DeltaMemLLM serves one
  backbone, and a session's state is bound to the backbone that wrote it; a per-call ``model``
  that differs is refused with an error naming the fix;
- image, PDF, audio, video and Anthropic-style block inputs: the backbones read text only;
- ``test_stream_time``: a VCR-recorded HTTP benchmark, meaningless for a local model;
- ``test_init_from_env``: no setting is read from environment variables (the folders follow
  ``DELTAMEM_HOME`` when first used, not at construction).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_deltamem import DeltaMemLLM
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

SMALL_MODEL = (
    "SmolLM2-135M-Instruct (the embedded backbone) does not write <tool_call> blocks on its own; "
    "tool calling is tested with scripted replies in test_chat_models.py"
)
NO_JSON = (
    "SmolLM2-135M-Instruct does not answer with schema-conforming JSON, even after the repair turn; "
    "structured output is tested with scripted replies in test_structured_output.py"
)


@pytest.mark.filterwarnings("ignore:DeltaMemLLM ignores the arguments \\['api_key'\\]")
class TestDeltaMemLLMUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return DeltaMemLLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"session_id": "standard-unit"}

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.xfail(
        reason="langchain-core 1.x loads with allowed_objects='all' only the classes in its own mapping of "
        "LangChain packages; DeltaMemLLM dumps, and loads with an explicit allowed_objects=[DeltaMemLLM] "
        "(test_chat_models.py::test_a_model_round_trips_through_langchain_serialization)",
        strict=True,
    )
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)


@pytest.fixture(scope="module", autouse=True)
def _deltamem_home(tmp_path_factory):
    """Sessions and text log of the integration suite live in a temporary DELTAMEM_HOME."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DELTAMEM_HOME", str(tmp_path_factory.mktemp("deltamem-home")))
        yield


@pytest.mark.smollm2
class TestDeltaMemLLMIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return DeltaMemLLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # a fresh session per test keeps contexts short; short replies keep the suite quick
        return {"session_id": f"std-{uuid.uuid4().hex[:12]}", "max_tokens": 12, "device": "cpu", "dtype": "float32"}

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_bind_runnables_as_tools(self, model: BaseChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_tool_choice(self, model: BaseChatModel) -> None:
        super().test_tool_choice(model)

    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=SMALL_MODEL, strict=True)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @pytest.mark.xfail(reason=NO_JSON, strict=True)
    def test_structured_output(self, model: BaseChatModel, schema_type: str) -> None:
        super().test_structured_output(model, schema_type)  # type: ignore[arg-type]

    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @pytest.mark.xfail(reason=NO_JSON, strict=True)
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: str) -> None:
        await super().test_structured_output_async(model, schema_type)  # type: ignore[arg-type]

    @pytest.mark.xfail(reason=NO_JSON, strict=True)
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=NO_JSON, strict=True)
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(reason=NO_JSON, strict=True)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
