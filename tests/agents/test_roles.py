"""Roles: the built-ins, custom roles from TOML or Python, and the errors bad config gets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agency.agents.roles import BUILTIN_ROLES, FALLBACK_ROLE, MIN_EXAMPLES, Role, roles_from_config
from agency.config import AgencyConfig
from agency.errors import ConfigError

LEGAL_TOML = """
[llm.routing]
code = ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]
legal = ["openai:gpt-4o"]

[agents.roles.legal]
description = "Law: contracts, rights and liability."
system_prompt = "You are a careful legal assistant."
examples = [
    "Is a handshake deal a binding contract?",
    "What rights does a tenant have when the heating breaks?",
    "How long is a patent valid?",
]
"""


def _agents(**role: Any) -> dict[str, Any]:
    return {"roles": {"legal": role}}


def _error(table: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        roles_from_config(table)
    return info.value


# -- built-ins ------------------------------------------------------------------------
def test_builtin_roles_are_the_four_with_examples_and_prompts() -> None:
    assert list(BUILTIN_ROLES) == ["code", "math", "creative", "general"]
    assert FALLBACK_ROLE == "general"
    for name, role in BUILTIN_ROLES.items():
        assert role.name == name
        assert 8 <= len(role.examples) <= 15
        assert len(set(role.examples)) == len(role.examples)
        assert role.description and role.system_prompt
        assert role.chain == ()


def test_role_is_frozen_and_hashable_with_lists_frozen_to_tuples() -> None:
    role = Role("legal", "Law.", "Be careful.", examples=["a", "b"], chain=["openai:gpt-4o"])  # type: ignore[arg-type]
    assert role.examples == ("a", "b") and role.chain == ("openai:gpt-4o",)
    assert hash(role) == hash(Role("legal", "Law.", "Be careful.", ("a", "b"), ("openai:gpt-4o",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        role.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["", "1legal", "legal team", "x" * 65])
def test_role_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="role name"):
        Role(name, "d", "p", ("a",))


# -- TOML / mappings --------------------------------------------------------------------
def test_no_config_gives_the_builtins() -> None:
    assert roles_from_config(None) == BUILTIN_ROLES
    assert roles_from_config({}) == BUILTIN_ROLES


def test_a_custom_role_is_added_beside_the_builtins() -> None:
    examples = ["Is a handshake deal binding?", "How long is a patent valid?", "What is a tort?"]
    roles = roles_from_config(_agents(description="Law.", examples=examples))
    assert list(roles) == [*BUILTIN_ROLES, "legal"]
    legal = roles["legal"]
    assert legal.examples == tuple(examples)
    assert legal.description == "Law."
    assert "Law." in legal.system_prompt  # a default prompt from the description
    assert roles["code"] is BUILTIN_ROLES["code"]


def test_a_builtin_role_is_overridden_field_by_field() -> None:
    roles = roles_from_config({"roles": {"code": {"system_prompt": "Write Rust only."}}})
    code = roles["code"]
    assert code.system_prompt == "Write Rust only."
    assert code.examples == BUILTIN_ROLES["code"].examples
    assert code.description == BUILTIN_ROLES["code"].description


def test_missing_description_of_a_new_role_names_the_key() -> None:
    err = _error(_agents(examples=["a", "b", "c"]))
    assert err.key == "agents.roles.legal.description"
    assert err.fix and "description" in err.fix


@pytest.mark.parametrize("examples", [None, [], ["only one"], ["one", "two"]])
def test_too_few_examples_name_the_key_and_the_fix(examples: list[str] | None) -> None:
    role: dict[str, Any] = {"description": "Law."}
    if examples is not None:
        role["examples"] = examples
    err = _error({"roles": {"legal": role}})
    assert err.key == "agents.roles.legal.examples"
    assert str(MIN_EXAMPLES) in str(err)
    assert err.fix and "examples" in err.fix


def test_examples_must_be_a_list_of_strings() -> None:
    assert _error(_agents(description="Law.", examples="one")).key == (
        "agents.roles.legal.examples"
    )
    err = _error(_agents(description="Law.", examples=["one", 2, "three"]))
    assert err.key == "agents.roles.legal.examples[1]"
    err = _error(_agents(description="Law.", examples=["one", "  ", "three"]))
    assert err.key == "agents.roles.legal.examples[1]"


def test_unknown_keys_suggest_the_closest() -> None:
    err = _error(_agents(description="Law.", exampels=["a", "b", "c"]))
    assert err.key == "agents.roles.legal.exampels"
    assert "did you mean 'examples'" in str(err)


def test_bad_shapes_name_their_key() -> None:
    assert _error({"roles": ["legal"]}).key == "agents.roles"
    assert _error({"roles": {"legal": "Law."}}).key == "agents.roles.legal"
    assert _error({"roles": {"bad name": {"description": "x"}}}).key == "agents.roles.bad name"
    assert _error(_agents(description="")).key == "agents.roles.legal.description"
    assert _error(_agents(description="Law.", examples=["a", "b", "c"], chain="x")).key == (
        "agents.roles.legal.chain"
    )


# -- with an AgencyConfig ---------------------------------------------------------------
def test_config_fills_chains_from_llm_routing_by_role_name() -> None:
    config = AgencyConfig.from_toml_str(LEGAL_TOML, source="agency.toml")
    roles = roles_from_config(config)
    assert roles["legal"].chain == ("openai:gpt-4o",)
    assert roles["code"].chain == ("openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest")
    assert roles["math"].chain == ()  # no routing: the default model
    assert roles["legal"].system_prompt == "You are a careful legal assistant."


def test_an_explicit_chain_wins_over_llm_routing() -> None:
    text = LEGAL_TOML.replace(
        '    "How long is a patent valid?",\n]',
        '    "How long is a patent valid?",\n]\nchain = ["anthropic:claude-3-5-sonnet-latest"]',
    )
    roles = roles_from_config(AgencyConfig.from_toml_str(text))
    assert roles["legal"].chain == ("anthropic:claude-3-5-sonnet-latest",)


def test_a_bad_chain_entry_names_source_key_and_fix() -> None:
    text = LEGAL_TOML + 'chain = ["openai:gpt-4o", "no-such-provider:model"]\n'
    with pytest.raises(ConfigError) as info:  # when the file loads, not when roles are read
        AgencyConfig.from_toml_str(text, source="agency.toml")
    err = info.value
    assert err.key == "agents.roles.legal.chain[1]"
    assert err.source == "agency.toml"
    assert "no-such-provider:model" in str(err)
    assert err.fix and "spec" in err.fix


def test_chain_entries_may_name_provider_entries() -> None:
    text = """
[[llm.providers]]
name = "fast"
provider = "openai"
api_key = "sk-test-not-real"

[agents.roles.legal]
description = "Law."
examples = ["a tort?", "a patent?", "a lease?"]
chain = ["fast"]
"""
    roles = roles_from_config(AgencyConfig.from_toml_str(text))
    assert roles["legal"].chain == ("fast",)
