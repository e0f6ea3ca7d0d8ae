"""`bind_tools` and `with_structured_output` for any chat model of ours.

Tools are bound in OpenAI's function format, which every adapter translates to its wire.
The class using the mixin provides ``capabilities`` (a `Capabilities`) and ``provider`` (a
label for error messages); `AgencyChatModel` and `FallbackChatModel` both do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from agency.errors import CapabilityError

if TYPE_CHECKING:
    from agency.providers._base import Capabilities

__all__ = ["StructuredOutputMixin"]


class StructuredOutputMixin:
    """Tool binding and structured output over ``self.capabilities``."""

    if TYPE_CHECKING:
        provider: str

        @property
        def capabilities(self) -> Capabilities: ...

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's function format, which every adapter translates.

        ``tool_choice``: ``"auto"``, ``"none"``, ``"any"``/``"required"``/``True`` (must call a
        tool), or a tool name (must call that tool).
        """
        if not self.capabilities.tools:
            raise CapabilityError(f"{self.provider} does not support tool calling")
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] | None = None,
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers parsed into ``schema`` (a pydantic class, TypedDict or JSON schema).

        ``method`` defaults to ``json_schema`` where the provider constrains output to a
        schema, else ``function_calling``, else ``json_mode``.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments: {sorted(kwargs)}")
        caps = self.capabilities
        if method is None:
            method = (
                "json_schema"
                if caps.json_schema
                else "function_calling"
                if caps.tools
                else "json_mode"
            )
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser: Runnable[Any, Any]
        if method == "function_calling":
            if schema is None:
                raise ValueError("function_calling needs a schema")
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            llm = self.bind_tools(
                [tool],
                tool_choice=name,
                parallel_tool_calls=False,
                strict=strict,
                ls_structured_output_format={
                    "kwargs": {"method": method, "strict": strict},
                    "schema": tool,
                },
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method == "json_schema":
            if schema is None:
                raise ValueError("json_schema needs a schema")
            if not caps.json_schema:
                raise CapabilityError(f"{self.provider} cannot constrain output to a JSON schema")
            json_schema = convert_to_json_schema(schema, strict=strict)
            spec: dict[str, Any] = {
                "name": json_schema.get("title", "output"),
                "schema": json_schema,
            }
            if strict is not None:
                spec["strict"] = strict
            llm = self.bind(  # type: ignore[attr-defined]
                response_format={"type": "json_schema", "json_schema": spec},
                ls_structured_output_format={
                    "kwargs": {"method": method, "strict": strict},
                    "schema": json_schema,
                },
            )
            parser = _json_parser(schema, is_pydantic)
        elif method == "json_mode":
            if not caps.json_mode:
                raise CapabilityError(f"{self.provider} has no JSON mode")
            llm = self.bind(  # type: ignore[attr-defined]
                response_format={"type": "json_object"},
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            )
            parser = _json_parser(schema, is_pydantic)
        else:
            raise ValueError(
                f"unknown method {method!r}: use function_calling, json_schema or json_mode"
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )


def _json_parser(schema: Any, is_pydantic: bool) -> Runnable[Any, Any]:
    return PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()


def _tool_choice(
    choice: str | dict[str, Any] | bool, tools: list[dict[str, Any]]
) -> str | dict[str, Any]:
    if choice is True or choice in ("any", "required"):
        return "required"
    if isinstance(choice, dict) or choice in ("auto", "none"):
        return choice
    names = [t["function"]["name"] for t in tools]
    if choice not in names:
        raise ValueError(f"tool_choice {choice!r} is not one of the bound tools {names}")
    return {"type": "function", "function": {"name": choice}}
