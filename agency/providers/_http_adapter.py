"""`HTTPAdapter`: the HTTP half every remote wire adapter shares.

URLs, auth headers, the pooled clients, JSON calls, SSE and NDJSON streams, and the mapping
of failures into `agency.errors` (through `agency._http`, the one place that classifies them).
A wire adapter subclasses it and writes only its protocol: request bodies and response parsing.
A chat provider's adapter is an `HTTPChatAdapter` (a `ChatAdapter` too), which streams with a
wire's `StreamReader`; an embeddings-only one (Voyage) is an `HTTPAdapter` alone.

Embeddings are a template here: `_embed` cuts the texts into batches of `embed_batch_size`,
sends each (`_embed_body` builds the body, `_embed_send` sends it) and parses the answer
(`_embed_vectors`, by default the OpenAI shape), so a wire writes only those hooks.
"""

from __future__ import annotations

import asyncio
import weakref
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, NamedTuple, Protocol

import httpx
from langchain_core.outputs import ChatGenerationChunk

from agency._http import (
    ErrorInfo,
    aiter_ndjson,
    aiter_sse,
    async_client,
    async_request,
    call_with_retry,
    call_with_retry_async,
    default_error_info,
    error_from_response,
    error_from_transport,
    iter_ndjson,
    iter_sse,
    sync_client,
)
from agency.errors import CapabilityError, ConfigError, MalformedResponse, ProviderError
from agency.providers._base import Adapter, ChatAdapter, ChatRequest, InputType
from agency.providers._wire import loads_json, malformed, openai_embeddings

__all__ = ["EmbedCall", "HTTPAdapter", "HTTPChatAdapter", "StreamReader"]


class EmbedCall(NamedTuple):
    """One embeddings request: where, what, and how many vectors its answer holds."""

    path: str
    body: Any
    size: int


class HTTPAdapter(Adapter):
    """Shared HTTP mechanics; subclasses override the hooks they need."""

    embed_batch_size: ClassVar[int] = 1000
    """Texts per embeddings request (the provider's limit, or less)."""
    embed_path: ClassVar[str] = "/embeddings"
    """Where `_embed_calls` sends the batches."""

    request_id_headers: ClassVar[tuple[str, ...]] = (
        "x-request-id",
        "request-id",
        "x-goog-request-id",
        "cf-ray",
    )
    """Response headers that carry the provider's request id."""

    on_response_headers: Callable[[Mapping[str, str]], None] | None = None
    """Called with the headers of every HTTP response (errors too), e.g. by a rate limiter
    that reads ``x-ratelimit-*``; ``None`` (the default) costs nothing."""

    # -- hooks --------------------------------------------------------------------------
    def _url(self, path: str, model: str | None = None) -> str:
        """Absolute URL of ``path`` (which starts with ``/``)."""
        return self.connection.base_url + path

    def _params(self) -> Mapping[str, str] | None:
        """Query parameters sent on every request."""
        return None

    def _headers(self) -> dict[str, str]:
        """Headers for one request: the profile's, the caller's, then the key's."""
        return {**self.connection.headers, **self.connection.auth_headers()}

    def _error_info(self, body: Any, text: str) -> ErrorInfo:
        """Message, type and code of an error body (default: OpenAI's shape and variants)."""
        return default_error_info(body, text)

    # -- plumbing -----------------------------------------------------------------------
    _own_client: httpx.Client | None = None
    _own_aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]

    def _client(self) -> httpx.Client:
        """The shared pooled client, or this adapter's own one on ``connection.transport``.

        An own client is never closed here: closing it would close the caller's transport,
        which may serve other models; the caller owns it."""
        transport = self.connection.transport
        if transport is None:
            return sync_client(self.connection.base_url, self.connection.timeout)
        if self._own_client is None or self._own_client.is_closed:
            if not isinstance(transport, httpx.BaseTransport):
                raise ConfigError(
                    f"{self.provider}: transport {type(transport).__name__} is async-only",
                    fix="pass an httpx.BaseTransport for sync calls (httpx.MockTransport is both)",
                )
            self._own_client = httpx.Client(transport=transport, timeout=self.connection.timeout)
        return self._own_client

    def _aclient(self) -> httpx.AsyncClient:
        """Async twin of `_client`; an own client is kept per event loop, as the pool does."""
        transport = self.connection.transport
        if transport is None:
            return async_client(self.connection.base_url, self.connection.timeout)
        if "_own_aclients" not in self.__dict__:
            self._own_aclients = weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        client = self._own_aclients.get(loop)
        if client is None or client.is_closed:
            if not isinstance(transport, httpx.AsyncBaseTransport):
                raise ConfigError(
                    f"{self.provider}: transport {type(transport).__name__} is sync-only",
                    fix="pass an httpx.AsyncBaseTransport for async calls",
                )
            client = httpx.AsyncClient(transport=transport, timeout=self.connection.timeout)
            self._own_aclients[loop] = client
        return client

    def _error(self, response: httpx.Response, model: str | None) -> ProviderError:
        return error_from_response(
            response,
            provider=self.provider,
            model=model,
            secret=self.connection.secret(),
            parse=self._error_info,
            request_id_headers=self.request_id_headers,
        )

    def _raise_for(self, response: httpx.Response, model: str | None) -> None:
        if response.status_code >= 400:
            raise self._error(response, model)

    def _request_id(self, response: httpx.Response) -> str | None:
        return next(
            (response.headers[h] for h in self.request_id_headers if h in response.headers), None
        )

    def _json(self, response: httpx.Response, model: str | None) -> Any:
        try:
            return loads_json(response.content)
        except ValueError as exc:
            raise malformed(
                self.provider,
                model,
                f"response is not JSON: {response.text[:200]!r}",
                status_code=response.status_code,
                request_id=self._request_id(response),
            ) from exc

    def _transport_error(self, exc: httpx.TransportError, model: str | None) -> ProviderError:
        return error_from_transport(
            exc, provider=self.provider, model=model, secret=self.connection.secret()
        )

    def _request_args(
        self, method: str, path: str, model: str | None, body: Any, kw: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "method": method,
            "url": self._url(path, model),
            "json": body,
            "headers": self._headers(),
            "params": self._params(),
            **kw,
        }

    @contextmanager
    def _answering(self, response: httpx.Response) -> Iterator[None]:
        """Parse ``response`` inside: a `MalformedResponse` gets its request id."""
        try:
            yield
        except MalformedResponse as exc:
            request_id = self._request_id(response)
            if exc.request_id is not None or request_id is None:
                raise
            raise MalformedResponse(
                exc.message,
                provider=exc.provider,
                model=exc.model,
                status_code=exc.status_code,
                request_id=request_id,
            ) from exc.__cause__

    def _answer(
        self, response: httpx.Response, model: str | None, parse: Callable[[Any], Any] | None
    ) -> Any:
        """A 2xx answer's body, through ``parse`` when given; else the mapped error."""
        if self.on_response_headers is not None:
            self.on_response_headers(response.headers)
        self._raise_for(response, model)
        data = self._json(response, model)
        if parse is None:
            return data
        with self._answering(response):
            return parse(data)

    def _send(
        self, method: str, path: str, model: str | None, body: Any = None,
        parse: Callable[[Any], Any] | None = None, **kw: Any,
    ) -> Any:  # fmt: skip
        """One JSON request: the body of a 2xx answer (``parse``d, so a malformed one is
        reported with its request id), else the mapped error."""
        try:
            response = self._client().request(**self._request_args(method, path, model, body, kw))
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc
        return self._answer(response, model, parse)

    async def _asend(
        self, method: str, path: str, model: str | None, body: Any = None,
        parse: Callable[[Any], Any] | None = None, **kw: Any,
    ) -> Any:  # fmt: skip
        """Async twin of `_send`."""
        try:
            args = self._request_args(method, path, model, body, kw)
            response = await async_request(self._aclient(), **args)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc
        return self._answer(response, model, parse)

    def _opened(self, response: httpx.Response) -> bool:
        """Report a stream's headers; whether it is an error (to be read, then raised)."""
        if self.on_response_headers is not None:
            self.on_response_headers(response.headers)
        return response.status_code >= 400

    def _stream_lines(
        self, path: str, body: Any, model: str | None, *, sse: bool, method: str = "POST",
        parse: Callable[[Any], Any] | None = None, **kw: Any,
    ) -> Iterator[Any]:  # fmt: skip
        """SSE events (``sse=True``) or NDJSON lines of a streamed request, each through
        ``parse`` when given (so a malformed one is reported with the request id); errors
        mapped."""
        try:
            args = self._request_args(method, path, model, body, kw)
            with self._client().stream(**args) as response:
                if self._opened(response):
                    response.read()
                    raise self._error(response, model)
                with self._answering(response):
                    for item in iter_sse(response) if sse else iter_ndjson(response):
                        yield item if parse is None else parse(item)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc

    async def _astream_lines(
        self, path: str, body: Any, model: str | None, *, sse: bool, method: str = "POST",
        parse: Callable[[Any], Any] | None = None, **kw: Any,
    ) -> AsyncIterator[Any]:  # fmt: skip
        """Async twin of `_stream_lines`."""
        try:
            args = self._request_args(method, path, model, body, kw)
            async with self._aclient().stream(**args) as response:
                if self._opened(response):
                    await response.aread()
                    raise self._error(response, model)
                lines = aiter_sse(response) if sse else aiter_ndjson(response)
                with self._answering(response):
                    async for item in lines:
                        yield item if parse is None else parse(item)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, model) from exc

    # -- embeddings: the template -------------------------------------------------------
    def _embed_calls(
        self, texts: Sequence[str], model: str, dimensions: int | None, input_type: InputType | None
    ) -> Iterator[EmbedCall]:
        """The requests embedding ``texts``: batches of `embed_batch_size` to `embed_path`."""
        size = self.embed_batch_size
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            body = self._embed_body(batch, model, dimensions, input_type)
            yield EmbedCall(self.embed_path, body, len(batch))

    def _embed_body(
        self, batch: Sequence[str], model: str, dimensions: int | None, input_type: InputType | None
    ) -> Any:
        """The request body embedding one batch (a wire with embeddings writes it)."""
        raise CapabilityError(self.embeddings_hint or f"{self.provider} does not offer embeddings")

    def _embed_send(self, call: EmbedCall, model: str) -> list[list[float]]:
        """The vectors answering one embeddings request."""
        parse = partial(self._embed_vectors, count=call.size, model=model)
        return self._send("POST", call.path, model, call.body, parse=parse)

    async def _aembed_send(self, call: EmbedCall, model: str) -> list[list[float]]:
        """Async twin of `_embed_send`."""
        parse = partial(self._embed_vectors, count=call.size, model=model)
        return await self._asend("POST", call.path, model, call.body, parse=parse)

    def _embed_vectors(self, data: Any, count: int, model: str) -> list[list[float]]:
        """The ``count`` vectors of one answer (default: OpenAI's ``data[].embedding``)."""
        return openai_embeddings(data, count, self.provider, model)

    def _check_embeddings(self) -> None:
        if not self.effective_capabilities().embeddings:
            hint = self.embeddings_hint or f"{self.provider} does not offer embeddings"
            raise CapabilityError(hint)

    def _embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        self._check_embeddings()
        vectors: list[list[float]] = []
        for call in self._embed_calls(texts, model, dimensions, input_type):
            vectors += self._embed_send(call, model)
        return vectors

    async def _aembed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None,
        input_type: InputType | None = None,
    ) -> list[list[float]]:  # fmt: skip
        self._check_embeddings()
        vectors: list[list[float]] = []
        for call in self._embed_calls(texts, model, dimensions, input_type):
            vectors += await self._aembed_send(call, model)
        return vectors


class StreamReader(Protocol):
    """Reads one streamed answer, item by item (`SSEEvent`s, or NDJSON lines)."""

    @property
    def done(self) -> bool:
        """The wire said the answer is complete: nothing more is read."""

    def feed(self, item: Any) -> ChatGenerationChunk | None:
        """The chunk one item carries, if any (the wire's errors raised)."""

    def end(self) -> ChatGenerationChunk | None:
        """After the last item: a closing chunk, if the wire has one; `ConnectionFailed`
        when the stream stopped before the answer was complete."""


class HTTPChatAdapter(HTTPAdapter, ChatAdapter):
    """A chat wire over HTTP. `_complete` sends `_chat_request` and parses the answer with
    `_whole`; `_stream` sends the streamed `_chat_request` and reads it with `_reader`: a
    wire writes those three hooks."""

    sse: ClassVar[bool] = True
    """Streams are server-sent events (else NDJSON lines)."""

    @abstractmethod
    def _chat_request(self, request: ChatRequest, *, stream: bool) -> tuple[str, Any]:
        """Path and JSON body of the call (streamed or not)."""

    @abstractmethod
    def _whole(self, data: Any, request: ChatRequest) -> ChatGenerationChunk:
        """The chunk of a non-streamed answer's JSON body."""

    @abstractmethod
    def _reader(self, request: ChatRequest) -> StreamReader:
        """A new reader for one streamed answer."""

    def complete(self, request: ChatRequest) -> list[ChatGenerationChunk]:
        """One request, one chunk: `chat` with ``stream=False`` without its generators (the
        same retries: the one request is the first chunk)."""
        if type(self)._complete is not HTTPChatAdapter._complete:  # a wire with its own
            return super().complete(request)
        retries = self.connection.max_retries
        return [call_with_retry(partial(self._complete_one, request), retries)]

    async def acomplete(self, request: ChatRequest) -> list[ChatGenerationChunk]:
        """Async twin of `complete`."""
        if type(self)._acomplete is not HTTPChatAdapter._acomplete:
            return await super().acomplete(request)
        retries = self.connection.max_retries
        return [await call_with_retry_async(partial(self._acomplete_one, request), retries)]

    def _complete_one(self, request: ChatRequest) -> ChatGenerationChunk:
        path, body = self._chat_request(request, stream=False)
        parse = partial(self._whole, request=request)
        return self._send("POST", path, request.model, body, parse=parse)  # type: ignore[no-any-return]

    async def _acomplete_one(self, request: ChatRequest) -> ChatGenerationChunk:
        path, body = self._chat_request(request, stream=False)
        parse = partial(self._whole, request=request)
        return await self._asend("POST", path, request.model, body, parse=parse)  # type: ignore[no-any-return]

    def _complete(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        yield self._complete_one(request)

    async def _acomplete(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        yield await self._acomplete_one(request)

    def _stream(self, request: ChatRequest) -> Iterator[ChatGenerationChunk]:
        path, body = self._chat_request(request, stream=True)
        reader = self._reader(request)
        chunks = self._stream_lines(path, body, request.model, sse=self.sse, parse=reader.feed)
        for chunk in chunks:
            if chunk is not None:
                yield chunk
            if reader.done:
                break
        if (last := reader.end()) is not None:
            yield last

    async def _astream(self, request: ChatRequest) -> AsyncIterator[ChatGenerationChunk]:
        path, body = self._chat_request(request, stream=True)
        reader = self._reader(request)
        chunks = self._astream_lines(path, body, request.model, sse=self.sse, parse=reader.feed)
        async for chunk in chunks:
            if chunk is not None:
                yield chunk
            if reader.done:
                break
        if (last := reader.end()) is not None:
            yield last
