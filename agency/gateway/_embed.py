"""``POST /v1/embeddings`` behind the gateway: which embeddings model a name means, and the call.

A model name is an entry's name (its embedding model, with its key and base URL), ``default``
(`Agency.embeddings`) or an embeddings spec (``"openai:text-embedding-3-small"``), which takes
the key and base URL of the first entry of the same provider, as chain specs do. One
`AgencyEmbeddings` per name is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage

from agency.errors import AgencyError
from agency.gateway._core import Answer, Ticket
from agency.gateway._errors import GatewayError

if TYPE_CHECKING:
    from agency.gateway._core import Gateway
    from agency.gateway.keys import VirtualKey

__all__ = ["embed", "embeddings_for"]


def _unknown(text: str) -> GatewayError:
    return GatewayError(404, text, "invalid_request_error", param="model", code="model_not_found")


def embeddings_for(gw: Gateway, model: str) -> Any:
    """The `AgencyEmbeddings` for the model name ``model`` (kept per name)."""
    found = gw._embedders.get(model)
    if found is not None:
        return found
    from agency._factory import embeddings

    ag = gw.agency
    entries = ag.config.llm.ordered()
    try:
        if model == "default":
            found = ag.embeddings()
        elif (entry := ag.config.llm.find(model)) is not None and ":" not in model:
            found = embeddings(entry.embedding_spec, **entry.embedding_params())
        elif ":" in model:
            provider = model.partition(":")[0].lower()
            same = next((e for e in entries if e.provider == provider), None)
            found = embeddings(model, **(same.embedding_params() if same else {}))
        else:
            raise _unknown(
                f"unknown embeddings model {model!r}: an entry name, "
                '"default" or a "provider:model" spec'
            )
    except AgencyError as exc:
        raise _unknown(f"model {model!r} is not available here: {exc}") from exc
    gw._embedders[model] = found
    return found


async def embed(
    gw: Gateway,
    model: str,
    texts: list[str],
    dimensions: int | None,
    *,
    key: VirtualKey | None,
    request_id: str,
    started: float,
) -> tuple[list[list[float]], int]:
    """Vectors of ``texts`` and the prompt tokens counted; admitted (the key's model list and
    rate limit) and recorded in the audit log like a chat request."""
    from agency.pricing import cost_of, estimate_tokens, price_for

    ticket = Ticket(request_id, "embeddings", model, started, key=key)
    gw.admit(ticket)
    emb = embeddings_for(gw, model)
    dims = dimensions if dimensions is not None else emb.dimensions
    vectors: list[list[float]] = await emb._adapter.aembed(texts, model=emb.model, dimensions=dims)
    # Embeddings APIs rarely report usage to LangChain: counted as the pricing tables do.
    tokens = sum(estimate_tokens(t, provider=emb.provider, model=emb.model) for t in texts)
    usage: Any = {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}
    cost = cost_of(usage, price_for(emb.provider, emb.model))
    answer = Answer(AIMessage("", usage_metadata=usage), emb.provider, emb.model, 1, cost, "off")
    gw.settle(ticket, answer)
    return vectors, tokens
