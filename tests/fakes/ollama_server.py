"""A faithful fake of Ollama's native HTTP API, for tests.

``FakeOllama`` holds a Starlette app serving, like ``ollama serve`` on port 11434:

* ``GET /`` (``Ollama is running``), ``GET /api/version``,
* ``POST /api/chat`` (one JSON object, or NDJSON lines ending with ``"done": true``),
* ``POST /api/embed``, ``GET /api/tags``, ``POST /api/show``;
* any other path: Go's router answer, ``404 page not found`` as text.

Every chat/embed/show body is validated against ``ChatRequest`` / ``EmbedRequest`` /
``ShowRequest`` of ``../shared/specs/ollama-openapi.yaml``; a violation is answered with 400
``{"error": ...}`` and appended to ``fake.spec_violations``. The spec's ``ChatMessage`` lacks
``thinking`` and ``tool_name``, which docs/api.md documents: those are accepted; any other
field Ollama would silently ignore (unknown top-level, message or option keys) is answered
normally, as Ollama does, but recorded as a violation (``_ollama_wire.contract_problems``).

Models are resolved like Ollama (``llama3.2`` is ``llama3.2:latest``) against ``fake.models``;
an unknown one is 404 ``model "x" not found, try pulling it first``. Capabilities are enforced
as Ollama does: tools need ``tools``, ``think`` needs ``thinking``, images need ``vision``,
chat needs ``completion``.

Per test, ``fake.script(*actions)`` queues what the next chat requests get (``Reply``, ``Fail``,
``StreamError``, ``Stall``, ``Disconnect``, ``Malformed``); with the queue empty the
deterministic brain in ``_brain`` answers. ``fake.requests`` records every request.

    with FakeOllama().running() as fake:
        client = ollama.Client(host=fake.base_url)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from . import _brain
from ._ollama_wire import (
    DEFAULT_MODELS,
    SPEC_FILE,
    VERSION,
    ModelCard,
    Reply,
    brain_body,
    canonical_name,
    chat_objects,
    contract_problems,
    go_json,
    show_record,
    tag_record,
    timestamp,
    turn_from_answer,
    turn_from_reply,
)
from ._openai_wire import embed_text
from ._openapi import first_error, format_error
from ._service import (
    Disconnect,
    Fail,
    FakeService,
    FrameStream,
    Handler,
    Malformed,
    RecordedRequest,
    Stall,
    StreamError,
)

__all__ = [
    "DEFAULT_MODELS",
    "Disconnect",
    "Fail",
    "FakeOllama",
    "Malformed",
    "ModelCard",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
]

Action = Reply | Fail | StreamError | Stall | Disconnect | Malformed
_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        go_json(data), status, headers=headers, media_type="application/json; charset=utf-8"
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


def _lenient(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` for schema validation, with ``content`` defaulted on messages.

    The spec marks ``ChatMessage.content`` required, but Ollama decodes a missing one as ""
    and the official SDK drops empty values (an assistant message holding only tool calls
    goes out without ``content``): a live server accepts both, so the fake does too.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    fixed = [{"content": "", **m} if isinstance(m, dict) else m for m in messages]
    return {**body, "messages": fixed}


def ndjson_response(
    lines: list[Any],
    *,
    drop_after: int | None = None,
    error_after: tuple[int, str] | None = None,
) -> FrameStream:
    """One JSON object per line (``application/x-ndjson``); ``error_after=(N, text)`` writes N
    lines, then ``{"error": text}``, and ends normally; ``drop_after``: see ``FrameStream``."""
    if error_after is not None:
        count, text = error_after
        lines = [*lines[:count], {"error": text}]
    frames = [(line if isinstance(line, str) else go_json(line)) + "\n" for line in lines]
    return FrameStream(frames, media_type="application/x-ndjson", drop_after=drop_after)


class FakeOllama(FakeService):
    """The fake server (``FakeService`` for the harness). Beyond it: ``base_url`` is the server
    root like ``OLLAMA_HOST``; ``models`` (``ModelCard``s), ``api_key`` (require
    ``Authorization: Bearer`` as ollama.com does), ``version``: configuration, restored by
    ``reset()``.
    """

    chat_path = "/api/chat"
    json_media_type = "application/json; charset=utf-8"
    stream_media_type = "application/x-ndjson"
    Reply = Reply

    def __init__(
        self, *, models: tuple[ModelCard, ...] = DEFAULT_MODELS, api_key: str | None = None
    ) -> None:
        self._defaults: dict[str, Any] = {"models": list(models), "api_key": api_key}
        super().__init__()

    def _routes(self) -> list[tuple[str, Handler, list[str] | None]]:
        return [
            ("/", self._root, ["GET", "HEAD"]),
            ("/api/version", self._version, ["GET"]),
            ("/api/tags", self._tags, ["GET"]),
            ("/api/show", self._show, ["POST"]),
            ("/api/chat", self._chat, ["POST"]),
            ("/api/embed", self._embed, ["POST"]),
        ]

    def reset(self) -> None:
        """Clear script, recorded requests and violations; restore the configuration."""
        super().reset()
        self.models: list[ModelCard] = list(self._defaults["models"])
        self.api_key: str | None = self._defaults["api_key"]
        self.version: str = VERSION

    def card(self, name: str) -> ModelCard | None:
        wanted = canonical_name(name)
        return next((c for c in self.models if c.name == wanted), None)

    # ---- plumbing

    async def _admit(self, request: Request) -> Response | None:
        return self._authorise(request)

    def _fail(self, request: Request, fail: Fail) -> Response:
        message = fail.message or "an error was encountered while running the model"
        return _error(fail.status, message, fail.headers)

    def _error_response(self, request: Request, status: int) -> Response:
        if status == 500:
            return _error(500, "internal server error")
        # Gin's default for unknown routes and wrong methods alike.
        return PlainTextResponse("404 page not found", 404)

    def _authorise(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None  # a local server takes no key
        bearer = request.headers.get("authorization", "")
        if bearer != f"Bearer {self.api_key}":
            return _error(401, "unauthorized")
        return None

    def _parse(
        self, request: Request, schema: str
    ) -> tuple[dict[str, Any] | None, Response | None]:
        recorded: RecordedRequest = request.state.recorded
        if not recorded.raw:
            return None, _error(400, "missing request body")
        if not isinstance(recorded.body, dict):
            self._violation(request, "body is not a JSON object")
            return None, _error(400, "invalid character in request body")
        error = first_error(SPEC_FILE, schema, _lenient(recorded.body))
        if error is not None:
            text = format_error(error)
            self._violation(request, f"{schema}: {text}")
            if error.validator == "required" and "'model'" in error.message:
                return None, _error(400, "model is required")
            return None, _error(400, f"json: cannot unmarshal request ({text})")
        return recorded.body, None

    def _model_missing(self, name: str) -> Response:
        return _error(404, f'model "{name}" not found, try pulling it first')

    # ---- endpoints

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, request: Request) -> Response:
        return _json({"version": self.version})

    async def _tags(self, request: Request) -> Response:
        return _json({"models": [tag_record(card) for card in self.models]})

    async def _show(self, request: Request) -> Response:
        body, early = self._parse(request, "ShowRequest")
        if early is not None:
            return early
        assert body is not None
        card = self.card(body["model"])
        if card is None:
            return _error(404, f"model '{body['model']}' not found")
        return _json(show_record(card))

    def _capability_error(self, body: dict[str, Any], card: ModelCard) -> str | None:
        name = body["model"]
        if "completion" not in card.capabilities:
            return f'"{name}" does not support chat'
        if body.get("tools") and "tools" not in card.capabilities:
            return f"registry.ollama.ai/library/{card.name} does not support tools"
        if body.get("think") and "thinking" not in card.capabilities:
            return f'"{name}" does not support thinking'
        if "vision" not in card.capabilities and any(
            m.get("images") for m in body.get("messages") or []
        ):
            return "this model is missing data required for image input"
        return None

    async def _chat(self, request: Request) -> Any:
        body, early = self._parse(request, "ChatRequest")
        if early is not None:
            return early
        assert body is not None
        ignored, rejected = contract_problems(body)
        for text in ignored:
            self._violation(request, f"contract: {text}")
        if rejected is not None:
            self._violation(request, f"contract: {rejected}")
            return _error(400, rejected)
        card = self.card(body["model"])
        if card is None:
            return self._model_missing(body["model"])
        problem = self._capability_error(body, card)
        if problem is not None:
            return _error(400, problem)
        stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        now, action = await self._take(request, stream=stream)
        if now is not None:
            return now
        messages = body.get("messages") or []
        if not messages:  # an empty chat only loads the model
            return self._load_answer(body["model"], stream)
        brain = brain_body(body)
        prompt_tokens = _brain.prompt_token_count(brain)
        if isinstance(action, Reply):
            turn = turn_from_reply(action, prompt_tokens)
        else:
            thinking = ""
            if body.get("think"):
                thinking = f"The user asks: {_brain.last_user_text(brain['messages'])[:200]}"
            turn = turn_from_answer(_brain.respond(brain), thinking, prompt_tokens)
        objects = chat_objects(body["model"], turn, stream=stream)  # echoed as given
        if not stream:
            return _json(objects[0])
        return ndjson_response(
            objects,
            drop_after=action.after_events if isinstance(action, Disconnect) else None,
            error_after=(action.after_events, action.message or _STREAM_ERROR)
            if isinstance(action, StreamError)
            else None,
        )

    def _load_answer(self, model: str, stream: bool) -> Any:
        answer = {
            "model": model,
            "created_at": timestamp(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": "load",
            "done": True,
        }
        return ndjson_response([answer]) if stream else _json(answer)

    async def _embed(self, request: Request) -> Any:
        body, early = self._parse(request, "EmbedRequest")
        if early is not None:
            return early
        assert body is not None
        card = self.card(body["model"])
        if card is None:
            return self._model_missing(body["model"])
        now, _ = await self._take(request, "embeddings")
        if now is not None:
            return now
        raw = body["input"]
        texts = ([raw] if raw else []) if isinstance(raw, str) else list(raw)
        full = card.embedding_length
        dims = body.get("dimensions")
        if dims is not None and not 1 <= dims <= full:
            return _error(400, f"dimensions must be between 1 and {full}")
        counts = [_brain.count_tokens(text) + 2 for text in texts]  # + BOS/EOS
        if body.get("truncate") is False and any(n > card.context_length for n in counts):
            return _error(400, "the input length exceeds the context length")
        vectors = [embed_text(text, dims or full, full) for text in texts]
        return _json(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": 14_143_917 + 1_000 * sum(counts),
                "load_duration": 1_019_500,
                "prompt_eval_count": sum(counts),
            }
        )
