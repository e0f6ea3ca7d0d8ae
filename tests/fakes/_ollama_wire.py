"""Wire-level pieces of the fake Ollama server: the ``Reply`` action, the model catalogue, request
contract checks, the brain adapter and the answer objects.

Shapes follow Ollama's docs (``docs/api.md``) and ``docs/openapi.yaml``: compact JSON the way
Go's ``encoding/json`` writes it (``<``, ``>``, ``&`` escaped as ``\\u003c``...), RFC 3339
timestamps with nanoseconds, durations in nanoseconds, errors as ``{"error": "<text>"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from . import _brain
from ._openapi import component_properties

__all__ = [
    "DEFAULT_MODELS",
    "OPTION_NAMES",
    "SPEC_FILE",
    "VERSION",
    "ModelCard",
    "Reply",
    "Turn",
    "brain_body",
    "canonical_name",
    "chat_objects",
    "contract_problems",
    "go_json",
    "show_record",
    "tag_record",
    "timestamp",
    "turn_from_answer",
    "turn_from_reply",
]

SPEC_FILE = "ollama-openapi.yaml"
VERSION = "0.12.6"

# api.Options of the Ollama server (runner options + Modelfile parameters). Ollama logs
# "invalid option provided" and ignores anything else, so the fake records it as a violation.
OPTION_NAMES = frozenset(
    {
        "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv",
        "logits_all", "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread",
        "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "tfs_z", "typical_p",
        "repeat_last_n", "temperature", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline",
        "stop",
    }
)  # fmt: skip
# docs/api.md lists two message fields the OpenAPI ChatMessage schema lacks.
PROSE_MESSAGE_FIELDS = frozenset({"thinking", "tool_name"})


# --------------------------------------------------------------------------- script actions
@dataclass
class Reply:
    """Answer the next chat request with this message (streamed if the request streams)."""

    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments": dict, "id"?}]
    thinking: str | None = None
    done_reason: str | None = None  # default "stop"
    prompt_eval_count: int | None = None  # default: counted from the prompt
    eval_count: int | None = None  # default: counted from the answer


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelCard:
    """One pulled model: what ``/api/tags`` and ``/api/show`` say about it."""

    name: str  # "llama3.2:latest"
    family: str
    parameter_size: str
    parameter_count: int
    context_length: int
    embedding_length: int
    capabilities: tuple[str, ...]
    quantization_level: str = "Q4_K_M"
    size: int = 2_019_393_189
    modified_at: str = "2025-05-04T17:37:44.706015396-07:00"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.split(":")[0].encode()).hexdigest()


DEFAULT_MODELS = (
    ModelCard("llama3.2:latest", "llama", "3.2B", 3_212_749_888, 131_072, 3072,
              ("completion", "tools")),
    ModelCard("llama3.2:3b", "llama", "3.2B", 3_212_749_888, 131_072, 3072,
              ("completion", "tools")),
    ModelCard("mistral-small3.1:latest", "mistral3", "24.0B", 24_011_361_280, 131_072, 5120,
              ("completion", "vision", "tools"), size=15_486_899_116),
    ModelCard("qwen3:latest", "qwen3", "8.2B", 8_190_735_360, 40_960, 4096,
              ("completion", "tools", "thinking"), size=5_225_388_164),
    ModelCard("llava:latest", "llama", "7B", 6_738_415_616, 32_768, 4096,
              ("completion", "vision"), quantization_level="Q4_0", size=4_733_363_377),
    ModelCard("nomic-embed-text:latest", "nomic-bert", "137M", 136_727_040, 2048, 768,
              ("embedding",), quantization_level="F16", size=274_302_450),
)  # fmt: skip


def canonical_name(name: str) -> str:
    """Ollama's model-name resolution: the ``registry.ollama.ai/library/`` prefix is implied
    and a missing tag means ``:latest``."""
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def tag_record(card: ModelCard) -> dict[str, Any]:
    return {
        "name": card.name,
        "model": card.name,
        "modified_at": card.modified_at,
        "size": card.size,
        "digest": card.digest,
        "details": _details(card),
    }


def _details(card: ModelCard) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": card.family,
        "families": [card.family] + (["clip"] if "vision" in card.capabilities else []),
        "parameter_size": card.parameter_size,
        "quantization_level": card.quantization_level,
    }


def show_record(card: ModelCard) -> dict[str, Any]:
    arch = card.family.replace("-", "_") if card.family != "nomic-bert" else "nomic-bert"
    base = card.name.split(":")[0]
    return {
        "license": "LICENSE AGREEMENT (abridged, fake)",
        "modelfile": (
            '# Modelfile generated by "ollama show"\n'
            f"# To build a new Modelfile based on this one, replace the FROM line with:\n"
            f"# FROM {card.name}\n\nFROM /root/.ollama/models/blobs/sha256-{card.digest}\n"
        ),
        "parameters": 'stop                           "<|eot_id|>"',
        "template": "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}",
        "details": _details(card),
        "model_info": {
            "general.architecture": arch,
            "general.basename": base,
            "general.file_type": 15,
            "general.parameter_count": card.parameter_count,
            "general.quantization_version": 2,
            f"{arch}.block_count": 28,
            f"{arch}.context_length": card.context_length,
            f"{arch}.embedding_length": card.embedding_length,
            "tokenizer.ggml.model": "gpt2",
        },
        "capabilities": list(card.capabilities),
        "modified_at": card.modified_at,
    }


# --------------------------------------------------------------------------- wire helpers
def go_json(data: Any) -> str:
    """JSON the way Go's encoding/json writes it: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def timestamp() -> str:
    """Now as Go's RFC 3339 with nanoseconds (trailing zeros trimmed), in UTC."""
    ns = time.time_ns()
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{head}.{fraction}Z" if fraction else f"{head}Z"


def contract_problems(body: dict[str, Any]) -> tuple[list[str], str | None]:
    """Rules of ``/api/chat`` beyond the OpenAPI schema: (silently ignored fields the sender
    surely did not mean to have ignored, the error text of a request Ollama rejects)."""
    ignored: list[str] = []
    unknown = sorted(set(body) - component_properties(SPEC_FILE, "ChatRequest"))
    if unknown:
        ignored.append(f"unknown top-level field(s) {unknown} (Ollama ignores them)")
    allowed = component_properties(SPEC_FILE, "ChatMessage") | PROSE_MESSAGE_FIELDS
    for index, message in enumerate(body.get("messages") or []):
        extra = sorted(set(message) - allowed)
        if extra:
            ignored.append(f"messages[{index}]: unknown field(s) {extra} (Ollama ignores them)")
        if message.get("tool_name") is not None and message.get("role") != "tool":
            ignored.append(f"messages[{index}]: tool_name on a {message.get('role')} message")
        for image in message.get("images") or []:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                at = 4 if image.startswith("data") else 0
                return ignored, f"illegal base64 data at input byte {at}"
    options = body.get("options") or {}
    bad = sorted(set(options) - OPTION_NAMES)
    if bad:
        ignored.append(f"options: invalid option(s) provided {bad} (Ollama ignores them)")
    return ignored, None


def brain_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request in the chat-completions shape `_brain.respond` reads."""
    messages = []
    for message in body.get("messages") or []:
        content: Any = message.get("content") or ""
        if message.get("images"):
            parts = [{"type": "text", "text": content}] if content else []
            parts += [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                for image in message["images"]
            ]
            content = parts
        entry: dict[str, Any] = {"role": message.get("role"), "content": content}
        if message.get("tool_calls"):
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": json.dumps(call["function"].get("arguments") or {}),
                    },
                }
                for call in message["tool_calls"]
            ]
        messages.append(entry)
    out: dict[str, Any] = {"messages": messages}
    if body.get("tools"):
        out["tools"] = body["tools"]
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    options = body.get("options") or {}
    if options.get("stop"):
        out["stop"] = options["stop"]
    if isinstance(options.get("num_predict"), int) and options["num_predict"] > 0:
        out["max_tokens"] = options["num_predict"]
    return out


# --------------------------------------------------------------------------- answers
@dataclass
class Turn:
    """One assistant answer in Ollama's terms."""

    content: str
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # wire form
    done_reason: str = "stop"
    prompt_eval_count: int = 0
    eval_count: int = 0


def turn_from_answer(answer: _brain.Answer, thinking: str, prompt_tokens: int) -> Turn:
    calls = [
        {"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
        for c in answer.tool_calls
    ]
    content = answer.content or ""
    out = _brain.count_tokens(content + " " + thinking)
    out += sum(_brain.count_tokens(f"{c.name} {c.arguments}") for c in answer.tool_calls)
    # Ollama reports "stop" after tool calls: it has no tool_calls reason.
    reason = "length" if answer.finish_reason == "length" else "stop"
    return Turn(content, thinking, calls, reason, prompt_tokens, max(out, 1))


def turn_from_reply(reply: Reply, prompt_tokens: int) -> Turn:
    calls = []
    for call in reply.tool_calls or []:
        wire: dict[str, Any] = {
            "function": {"name": call["name"], "arguments": call.get("arguments") or {}}
        }
        if call.get("id"):
            wire["id"] = call["id"]
        calls.append(wire)
    counted = _brain.count_tokens(reply.content + " " + (reply.thinking or ""))
    return Turn(
        reply.content,
        reply.thinking or "",
        calls,
        reply.done_reason or "stop",
        prompt_tokens if reply.prompt_eval_count is None else reply.prompt_eval_count,
        counted if reply.eval_count is None else reply.eval_count,
    )


_PIECE = re.compile(r"\s*\S+\s*|\s+")


def _final(model: str, turn: Turn, message: dict[str, Any]) -> dict[str, Any]:
    prompt_ns, eval_ns = 1_200_000 * turn.prompt_eval_count, 9_500_000 * turn.eval_count
    return {
        "model": model,
        "created_at": timestamp(),
        "message": message,
        "done_reason": turn.done_reason,
        "done": True,
        "total_duration": 41_295_167 + prompt_ns + eval_ns,
        "load_duration": 41_295_167,
        "prompt_eval_count": turn.prompt_eval_count,
        "prompt_eval_duration": prompt_ns,
        "eval_count": turn.eval_count,
        "eval_duration": eval_ns,
    }


def chat_objects(model: str, turn: Turn, *, stream: bool) -> list[dict[str, Any]]:
    """The answer objects of ``/api/chat``: one (non-streamed), or the NDJSON lines: thinking
    and content a word at a time, each tool call complete in its own line, then the final
    ``done`` line with an empty message and the counts."""
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.thinking:
            message["thinking"] = turn.thinking
        if turn.tool_calls:
            message["tool_calls"] = turn.tool_calls
        return [_final(model, turn, message)]
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": "", "thinking": piece}
        for piece in _PIECE.findall(turn.thinking)
    ]
    deltas += [{"role": "assistant", "content": piece} for piece in _PIECE.findall(turn.content)]
    deltas += [{"role": "assistant", "content": "", "tool_calls": [c]} for c in turn.tool_calls]
    lines = [
        {"model": model, "created_at": timestamp(), "message": delta, "done": False}
        for delta in deltas
    ]
    return [*lines, _final(model, turn, {"role": "assistant", "content": ""})]
