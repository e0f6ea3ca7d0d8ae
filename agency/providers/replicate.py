"""The Replicate wire adapter: chat and embeddings as predictions.

A chat call creates a prediction of a language model: ``POST /v1/models/{owner}/{name}/predictions``
for ``owner/name`` (official models run by name) or ``POST /v1/predictions`` with ``version`` for
``owner/name:version``. The conversation is rendered as text into the model's ``prompt`` input
(system messages into ``system_prompt``); ``max_tokens``, ``temperature``, ``top_p``, ``seed`` and
``stop_sequences`` (one comma-separated string, as Replicate's language models take it) are
model inputs too, and ``model_kwargs`` are merged into the inputs.

Non-streamed calls send ``Prefer: wait=N`` (sync mode): the answer often arrives finished; if not,
the prediction's ``urls.get`` is polled until it is ``succeeded``, ``failed``, ``canceled`` or
``aborted`` (a prediction still running after `MAX_WAIT_S` is cancelled and `Timeout` raised).
Streams create the prediction with ``stream: true`` and read its ``urls.stream`` server-sent
events (``output`` tokens, ``error``, ``done``); usage comes from the prediction's ``metrics``
(``input_token_count``, ``output_token_count``), fetched once the stream is done.

Replicate has no tool calling, JSON mode or model listing: `capabilities` says so and the model
layer raises `CapabilityError`. Failed predictions are `ProviderUnavailable`, cancelled ones a
plain `ProviderError`. Embeddings run an embedding model whose input is ``{"texts": "<JSON
list>"}`` and whose output is one vector per text (``beautyyuyanli/multilingual-e5-large``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

import agency.errors as errors
from agency._http import ErrorInfo, SSEEvent
from agency.errors import CapabilityError, ConnectionFailed, ProviderError
from agency.providers import _wire
from agency.providers._base import Capabilities, ChatAdapter, ChatRequest
from agency.providers._http_adapter import EmbedCall, HTTPAdapter
from agency.providers.openai import wire_messages

__all__ = [
    "EMBEDDING_BATCH_SIZE",
    "MAX_WAIT_S",
    "POLL_INTERVAL_S",
    "ReplicateAdapter",
    "build_chat_input",
    "chunk_from_prediction",
    "prediction_route",
    "usage_from_metrics",
    "vectors_from_output",
]

MAX_WAIT_S = 600.0
"""Longest a prediction may run (cold starts included) before it is cancelled and `Timeout`."""
POLL_INTERVAL_S = 0.25
"""First delay between polls of a running prediction; grows by half up to `POLL_MAX_S`."""
POLL_MAX_S = 2.0
"""Longest delay between two polls."""
SYNC_WAIT_S = 60
"""The most ``Prefer: wait`` may ask Replicate to hold a request (its documented cap)."""
EMBEDDING_BATCH_SIZE = 128
"""Texts per embedding prediction."""

_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_REPLICATE_DOMAINS = (".replicate.com", ".replicate.net", ".replicate.delivery")
_TOP_LEVEL = frozenset({"webhook", "webhook_completed", "webhook_events_filter"})


# --------------------------------------------------------------------------- requests
def prediction_route(model: str) -> tuple[str, dict[str, Any]]:
    """(path, extra body fields) that create a prediction of ``model``: ``owner/name`` runs the
    model by name, ``owner/name:version`` or a bare 64-hex version id runs that version."""
    name, _, version = model.partition(":")
    if not version and _VERSION_ID.fullmatch(name):
        name, version = "", name
    if version:
        return "/v1/predictions", {"version": version}
    owner, _, rest = name.partition("/")
    if not owner or not rest or "/" in rest:
        raise errors.ConfigError(
            f"replicate model {model!r} is not owner/name[:version]",
            key="model",
            fix='name it like "replicate:meta/meta-llama-3-8b-instruct"',
        )
    return f"/v1/models/{owner}/{rest}/predictions", {}


def _text(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise CapabilityError(f"replicate chat takes text only, not {kind!r} content")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


def build_chat_input(request: ChatRequest) -> dict[str, Any]:
    """The model inputs of a chat call: ``prompt`` (a lone user message as is, else the turns
    as ``User:``/``Assistant:`` paragraphs), ``system_prompt``, sampling, ``model_kwargs``."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in wire_messages(request.messages):
        role = str(message.get("role"))
        text = _text(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((role, text))
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join(f"{_LABELS.get(role, role.title())}: {text}" for role, text in turns)
    inputs: dict[str, Any] = {"prompt": prompt}
    if system:
        inputs["system_prompt"] = "\n\n".join(system)
    if request.max_tokens is not None:
        inputs["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        inputs["temperature"] = request.temperature
    if request.top_p is not None:
        inputs["top_p"] = request.top_p
    if request.seed is not None:
        inputs["seed"] = request.seed
    if request.stop:
        inputs["stop_sequences"] = ",".join(request.stop)
    inputs.update({k: v for k, v in request.extra_body.items() if k not in _TOP_LEVEL})
    return inputs


def _body(request: ChatRequest, extra: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {**extra, "input": build_chat_input(request)}
    body.update({k: v for k, v in request.extra_body.items() if k in _TOP_LEVEL})
    if stream:
        body["stream"] = True
    return body


# --------------------------------------------------------------------------- responses
def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def usage_from_metrics(metrics: Any) -> UsageMetadata | None:
    """LangChain usage from a prediction's ``metrics``, when the model reports token counts."""
    if not isinstance(metrics, dict):
        return None
    inp, out = _count(metrics.get("input_token_count")), _count(metrics.get("output_token_count"))
    if inp is None and out is None:
        return None
    return UsageMetadata(
        input_tokens=inp or 0, output_tokens=out or 0, total_tokens=(inp or 0) + (out or 0)
    )


def _output_text(output: Any, provider: str, model: str | None) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(t, str) for t in output):
        return "".join(output)
    raise _wire.malformed(provider, model, "prediction output is not text or a list of text tokens")


def _metadata(prediction: Mapping[str, Any], provider: str, model: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"provider": provider, "model_provider": "replicate"}
    meta["model_name"] = prediction.get("model") or model
    for key in ("id", "version"):
        if prediction.get(key):
            meta[key] = prediction[key]
    metrics = prediction.get("metrics")
    if isinstance(metrics, dict) and _count(metrics.get("predict_time")) is not None:
        meta["predict_time"] = metrics["predict_time"]
    return meta


def _finish_reason(prediction: Mapping[str, Any], max_tokens: int | None) -> str:
    # Replicate reports no stop reason; an answer that used every allowed token was cut off.
    metrics = prediction.get("metrics")
    out = _count(metrics.get("output_token_count")) if isinstance(metrics, dict) else None
    return "length" if max_tokens is not None and out is not None and out >= max_tokens else "stop"


def _final_chunk(
    prediction: Mapping[str, Any], provider: str, model: str | None, max_tokens: int | None,
    content: str,
) -> ChatGenerationChunk:  # fmt: skip
    with _wire.parsing(provider, model):
        finish = _finish_reason(prediction, max_tokens)
        meta = {**_metadata(prediction, provider, model), "finish_reason": finish}
        chunk = AIMessageChunk(
            content=content,
            usage_metadata=usage_from_metrics(prediction.get("metrics")),
            response_metadata=meta,
            id=prediction.get("id"),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=chunk, generation_info={"finish_reason": finish})


def _shaped(prediction: Any, provider: str, model: str | None) -> dict[str, Any]:
    """``prediction`` if it is an object with an id and a status, else `MalformedResponse`."""
    if (
        not isinstance(prediction, dict)
        or not isinstance(prediction.get("status"), str)
        or not isinstance(prediction.get("id"), str)
    ):
        raise _wire.malformed(provider, model, "a prediction without an id and a status")
    return prediction


def _check_status(prediction: Any, provider: str, model: str | None) -> dict[str, Any]:
    """The prediction if it succeeded; else the error its status means."""
    status, error = _shaped(prediction, provider, model)["status"], prediction.get("error")
    where = f"prediction {prediction.get('id', '?')}"
    if status == "failed":
        raise errors.ProviderUnavailable(f"{where} failed: {error}", provider=provider, model=model)
    if status == "aborted":
        raise errors.ProviderUnavailable(f"{where} was aborted", provider=provider, model=model)
    if status == "canceled":
        raise ProviderError(f"{where} was canceled", provider=provider, model=model)
    return prediction


def _stream_url(prediction: Any, provider: str, model: str | None) -> str | None:
    """The prediction's ``urls.stream``; None for a model that does not stream."""
    urls = _shaped(prediction, provider, model).get("urls")
    url = urls.get("stream") if isinstance(urls, dict) else None
    if url is not None and not isinstance(url, str):
        raise _wire.malformed(provider, model, "urls.stream is not a string")
    return url or None


def chunk_from_prediction(
    prediction: Any, provider: str, model: str | None, max_tokens: int | None = None
) -> ChatGenerationChunk:
    """The answer of a finished language-model prediction as one chunk (errors for failed,
    aborted and cancelled predictions)."""
    with _wire.parsing(provider, model):
        prediction = _check_status(prediction, provider, model)
        text = _output_text(prediction.get("output"), provider, model)
        return _final_chunk(prediction, provider, model, max_tokens, text)


def vectors_from_output(output: Any, count: int, provider: str, model: str) -> list[list[float]]:
    """An embedding model's output: exactly ``count`` lists of numbers."""
    return _wire.number_vectors(output, count, provider, model, "the prediction output")


def _event_detail(data: str) -> str:
    try:
        parsed = json.loads(data)
    except ValueError:
        return data
    return str(parsed.get("detail") or data) if isinstance(parsed, dict) else data


# --------------------------------------------------------------------------- adapter
class ReplicateAdapter(HTTPAdapter, ChatAdapter):
    """Replicate's predictions API over the shared HTTP plumbing."""

    capabilities = Capabilities(embeddings=True, list_models=False)

    def _url(self, path: str, model: str | None = None) -> str:
        # Prediction URLs (urls.get, urls.stream, urls.cancel) come back absolute.
        return path if path.startswith(("http://", "https://")) else self.connection.base_url + path

    def _headers_for(self, url: str) -> dict[str, str]:
        """Request headers; the key goes only to the API's host or Replicate's own domains, never
        to another host a prediction's ``urls`` might name."""
        headers = self._headers()
        host = httpx.URL(self._url(url)).host
        base = httpx.URL(self.connection.base_url).host
        if host == base or host.endswith(_REPLICATE_DOMAINS):
            return headers
        auth = self.connection.profile.auth_header.lower()
        return {k: v for k, v in headers.items() if k.lower() != auth}

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        if isinstance(body, dict) and ("detail" in body or "title" in body):
            title = body.get("title")
            return ErrorInfo(str(body.get("detail") or title), str(title) if title else None)
        return super()._error_info(body, text)

    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        err = super()._error(response, model)
        if response.status_code == 402:  # "insufficient credit": billing, not a bad request
            return errors.PermissionDenied(
                err.message, provider=err.provider, model=err.model,
                status_code=402, request_id=err.request_id,
            )  # fmt: skip
        return err

    def _wait_header(self) -> dict[str, str]:
        seconds = int(min(SYNC_WAIT_S, max(1.0, self.connection.timeout - 1)))
        return {"Prefer": f"wait={seconds}"}

    def _request_args(
        self, method: str, path: str, model: str | None, body: Any, kw: Mapping[str, Any]
    ) -> dict[str, Any]:
        # Prediction URLs come back absolute: the key goes only where `_headers_for` allows.
        extra = dict(kw)
        headers = {**self._headers_for(path), **extra.pop("headers", {})}
        return {"method": method, "url": self._url(path), "json": body, "headers": headers, **extra}

    def _get_url(self, prediction: Mapping[str, Any], key: str) -> str:
        urls = prediction.get("urls")
        url = urls.get(key) if isinstance(urls, dict) else None
        if isinstance(url, str) and url:
            return url
        suffix = "/cancel" if key == "cancel" else ""
        return f"/v1/predictions/{prediction.get('id')}{suffix}"

    def _cancel_quietly(self, prediction: Mapping[str, Any], model: str) -> None:
        with contextlib.suppress(ProviderError):  # best effort: the Timeout is raised anyway
            self._send("POST", self._get_url(prediction, "cancel"), model)

    async def _acancel_quietly(self, prediction: Mapping[str, Any], model: str) -> None:
        with contextlib.suppress(ProviderError):
            await self._asend("POST", self._get_url(prediction, "cancel"), model)

    def _timeout(self, prediction: Mapping[str, Any], model: str) -> errors.Timeout:
        return errors.Timeout(
            f"prediction {prediction.get('id')} still {prediction.get('status')} after "
            f"{MAX_WAIT_S:.0f} s; cancelled",
            provider=self.provider,
            model=model,
        )

    def _run(self, model: str, inputs: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """Create a prediction in sync mode and poll it to a terminal status."""
        path, route = prediction_route(model)
        body = {**route, **extra, "input": inputs}
        started = time.monotonic()
        return self._poll(
            self._send("POST", path, model, body, headers=self._wait_header()), model, started
        )

    async def _arun(
        self, model: str, inputs: dict[str, Any], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Async twin of `_run`."""
        path, route = prediction_route(model)
        body = {**route, **extra, "input": inputs}
        started = time.monotonic()
        created = await self._asend("POST", path, model, body, headers=self._wait_header())
        return await self._apoll(created, model, started)

    def _poll(self, prediction: Any, model: str, started: float | None = None) -> dict[str, Any]:
        """Poll ``urls.get`` until the prediction ends (at most `MAX_WAIT_S` from ``started``);
        the succeeded prediction, else the error its status means."""
        deadline = (time.monotonic() if started is None else started) + MAX_WAIT_S
        delay = POLL_INTERVAL_S
        while _shaped(prediction, self.provider, model).get("status") not in _TERMINAL:
            if time.monotonic() >= deadline:
                self._cancel_quietly(prediction, model)
                raise self._timeout(prediction, model)
            time.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX_S)
            prediction = self._send("GET", self._get_url(prediction, "get"), model)
        return _check_status(prediction, self.provider, model)

    async def _apoll(
        self, prediction: Any, model: str, started: float | None = None
    ) -> dict[str, Any]:
        """Async twin of `_poll`."""
        deadline = (time.monotonic() if started is None else started) + MAX_WAIT_S
        delay = POLL_INTERVAL_S
        while _shaped(prediction, self.provider, model).get("status") not in _TERMINAL:
            if time.monotonic() >= deadline:
                await self._acancel_quietly(prediction, model)
                raise self._timeout(prediction, model)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX_S)
            prediction = await self._asend("GET", self._get_url(prediction, "get"), model)
        return _check_status(prediction, self.provider, model)

    # -- chat -------------------------------------------------------------------------
    def _complete(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        extra = {k: v for k, v in request.extra_body.items() if k in _TOP_LEVEL}
        prediction = self._run(request.model, build_chat_input(request), extra)
        yield chunk_from_prediction(prediction, self.provider, request.model, request.max_tokens)

    async def _acomplete(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        extra = {k: v for k, v in request.extra_body.items() if k in _TOP_LEVEL}
        prediction = await self._arun(request.model, build_chat_input(request), extra)
        yield chunk_from_prediction(prediction, self.provider, request.model, request.max_tokens)

    def _sse_get(self, url: str, model: str) -> Iterator[SSEEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        return self._stream_lines(url, None, model, sse=True, method="GET", headers=headers)

    def _asse_get(self, url: str, model: str) -> AsyncIterator[SSEEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        return self._astream_lines(url, None, model, sse=True, method="GET", headers=headers)

    def _on_event(self, event: SSEEvent, prediction: Mapping[str, Any], model: str) -> Any:
        """An ``output`` event's chunk, ``True`` once ``done``, else None (``logs``)."""
        with _wire.parsing(self.provider, model):
            if event.event == "output":
                return ChatGenerationChunk(
                    message=AIMessageChunk(content=event.data, id=prediction.get("id"))
                )
            if event.event == "error":
                raise errors.ProviderUnavailable(
                    f"prediction {prediction.get('id')} failed: {_event_detail(event.data)}",
                    provider=self.provider, model=model,
                )  # fmt: skip
            if event.event == "done":
                try:
                    reason = json.loads(event.data or "{}").get("reason")
                except (ValueError, AttributeError) as exc:
                    raise _wire.malformed(
                        self.provider, model, "done event data is not an object"
                    ) from exc
                if reason:
                    _check_status({**prediction, "status": _DONE_STATUS.get(reason, "failed"),
                                   "error": reason}, self.provider, model)  # fmt: skip
                return True
            return None

    def _stream(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        path, route = prediction_route(request.model)
        prediction = self._send("POST", path, request.model, _body(request, route, stream=True))
        stream_url = _stream_url(prediction, self.provider, request.model)
        if not stream_url:  # a model without streaming: wait for the whole answer
            prediction = self._poll(prediction, request.model)
            yield chunk_from_prediction(
                prediction, self.provider, request.model, request.max_tokens
            )
            return
        for event in self._sse_get(stream_url, request.model):
            step = self._on_event(event, prediction, request.model)
            if step is True:
                break
            if step is not None:
                yield step
        else:
            raise ConnectionFailed(
                "stream ended before its done event", provider=self.provider, model=request.model
            )
        with contextlib.suppress(ProviderError):  # usage lives on the prediction (optional)
            reloaded = self._send("GET", self._get_url(prediction, "get"), request.model)
            prediction = reloaded if isinstance(reloaded, dict) else prediction
        yield _final_chunk(prediction, self.provider, request.model, request.max_tokens, "")

    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        path, route = prediction_route(request.model)
        body = _body(request, route, stream=True)
        prediction = await self._asend("POST", path, request.model, body)
        stream_url = _stream_url(prediction, self.provider, request.model)
        if not stream_url:
            prediction = await self._apoll(prediction, request.model)
            yield chunk_from_prediction(
                prediction, self.provider, request.model, request.max_tokens
            )
            return
        done = False
        async for event in self._asse_get(stream_url, request.model):
            step = self._on_event(event, prediction, request.model)
            if step is True:
                done = True
                break
            if step is not None:
                yield step
        if not done:
            raise ConnectionFailed(
                "stream ended before its done event", provider=self.provider, model=request.model
            )
        with contextlib.suppress(ProviderError):
            reloaded = await self._asend("GET", self._get_url(prediction, "get"), request.model)
            prediction = reloaded if isinstance(reloaded, dict) else prediction
        yield _final_chunk(prediction, self.provider, request.model, request.max_tokens, "")

    # -- embeddings: the hooks of HTTPAdapter's template (each batch is a prediction) ----
    embed_batch_size = EMBEDDING_BATCH_SIZE

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: str | None
    ) -> dict[str, Any]:
        # input_type is not sent: this API embeds queries and documents alike
        if dimensions is not None:
            raise CapabilityError(
                "replicate embedding models have a fixed vector size (no dimensions)"
            )
        return {"texts": json.dumps(list(batch))}

    def _embed_send(self, call: EmbedCall, model: str) -> list[list[float]]:
        prediction = self._run(model, call.body, {})
        return vectors_from_output(prediction.get("output"), call.size, self.provider, model)

    async def _aembed_send(self, call: EmbedCall, model: str) -> list[list[float]]:
        prediction = await self._arun(model, call.body, {})
        return vectors_from_output(prediction.get("output"), call.size, self.provider, model)


_DONE_STATUS = {"canceled": "canceled", "error": "failed", "aborted": "aborted"}
