"""Workflow files (agency.workflows.file): every key maps to a Step, every malformed file is one
ConfigError naming the file, the key path and the fix, and agency.load_config checks the
workflow tables of a combined file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI, Reply

from agency.app import Agency
from agency.config import AgencyConfig, load_config
from agency.errors import ConfigError
from agency.workflows import Workflow
from agency.workflows.config import workflows_config
from agency.workflows.file import load_workflow, workflow_from_dict

LLM = """
[[llm.providers]]
name = "primary"
provider = "openai"
api_key = "sk-test"
base_url = "{base_url}"
text_model = "gpt-4o-mini"

[[llm.providers]]
name = "backup"
provider = "openai"
api_key = "sk-test"
base_url = "{base_url}"
text_model = "gpt-4o"
"""

TWO_STEPS = """
[workflow]
name = "poem"
inputs = ["topic"]

[[step]]
name = "draft"
prompt = "Write about {topic}"

[[step]]
name = "final"
prompt = "Improve: {draft}"
after = ["draft"]
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "wf.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def local_agency() -> Agency:
    """An agency of the default config (the embedded model, nothing loaded until asked)."""
    return Agency(AgencyConfig())


def _error(path: Path, agency: Any = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_workflow(path, agency=agency)
    assert info.value.source == str(path), "the error names the file"
    assert str(path) in str(info.value)
    return info.value


# -- every key --------------------------------------------------------------------------------
def test_every_step_key_maps_to_the_step_field(
    write: Callable[..., Path], local_agency: Agency
) -> None:
    path = write(
        """
[workflow]
name = "all-keys"
description = "every key once"
inputs = ["topic", "items"]
budget_usd = 0.25
max_concurrency = 2

[[step]]
name = "draft"
prompt = "Write about {topic}"
system = "Be brief about {topic}"
role = "creative"
timeout_s = 30
max_attempts = 2
budget_usd = 0.01
cache = false
output = "text"
max_tokens = 40
options = { temperature = 0.2 }

[[step]]
name = "reviews"
prompt = "Review as a {item}: {text}"
models = ["primary", "local:smollm2"]
map = ["editor", "poet"]
after = ["draft"]
when = "len(text) > 0"
repeat = "draft"
until = "'ok' in reviews"
max_iterations = 4

[[step]]
name = "each"
prompt = "Say {item}"
map = "items"

[[step]]
name = "shaped"
prompt = "Describe {topic} as JSON"
structured = { type = "object", properties = { name = { type = "string" } } }

[[step]]
name = "upper"
fn = "cli_steps:shout"

[[step]]
name = "approve"
interrupt = true
prompt = "Publish {upper}?"
after = ["upper"]

[[step]]
name = "triage"
route = true
prompt = "{topic}"
""",
    )
    agency = Agency(
        AgencyConfig.from_toml_str(LLM.format(base_url="http://127.0.0.1:9/v1"), "llm.toml")
    )
    wf = load_workflow(path, agency=agency)

    assert isinstance(wf, Workflow) and wf.agency is agency
    assert (wf.name, wf.inputs, wf.budget_usd, wf.max_concurrency) == (
        "all-keys",
        ["topic", "items"],
        0.25,
        2,
    )
    draft = wf.steps["draft"]
    assert draft.prompt == "Write about {topic}" and draft.system == "Be brief about {topic}"
    assert (draft.role, draft.timeout_s, draft.max_attempts, draft.budget_usd) == (
        "creative",
        30,
        2,
        0.01,
    )
    assert (draft.cache, draft.key, draft.max_tokens) == (False, "text", 40)
    assert dict(draft.options) == {"temperature": 0.2}
    reviews = wf.steps["reviews"]
    assert reviews.models == ("primary", "local:smollm2") and reviews.after == ("draft",)
    assert reviews.map == ["editor", "poet"] and reviews.when == "len(text) > 0"
    assert (reviews.repeat, reviews.until, reviews.max_iterations) == (
        "draft",
        "'ok' in reviews",
        4,
    )
    assert wf.steps["each"].map == "items"
    assert wf.steps["shaped"].structured == {
        "type": "object",
        "properties": {"name": {"type": "string"}},
    }
    from cli_steps import shout

    assert wf.steps["upper"].fn is shout and wf.steps["upper"].kind == "fn"
    assert wf.steps["approve"].kind == "interrupt"
    assert wf.steps["triage"].kind == "route"


def test_a_file_of_fn_steps_runs(write: Callable[..., Path], tmp_path: Path) -> None:
    path = write(
        """
[workflow]
inputs = ["topic"]

[[step]]
name = "shout"
fn = "cli_steps:shout"

[[step]]
name = "decorate"
fn = "cli_steps:decorate"
after = ["shout"]
"""
    )
    wf = load_workflow(path, agency=Agency(AgencyConfig()))
    assert wf.name == "wf", "the file's name when [workflow] names none"
    run = wf.run({"topic": "the sea"}, checkpoint=str(tmp_path / "runs.sqlite"))
    assert run.status == "completed", run.error
    assert run.outputs == {"shout": "THE SEA!", "decorate": "*THE SEA!*"}


def test_a_nested_workflow_file_is_relative_to_its_parent(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "parts").mkdir()
    write(
        """
[workflow]
name = "inner"
inputs = ["topic"]

[[step]]
name = "shout"
fn = "cli_steps:shout"
""",
        "parts/inner.toml",
    )
    path = write(
        """
[workflow]
inputs = ["topic"]

[[step]]
name = "sub"
workflow = "parts/inner.toml"
"""
    )
    agency = Agency(AgencyConfig())
    wf = load_workflow(path, agency=agency)
    inner = wf.steps["sub"].workflow
    assert isinstance(inner, Workflow) and inner.name == "inner" and inner.agency is agency
    run = wf.run({"topic": "rain"}, checkpoint=str(tmp_path / "runs.sqlite"))
    assert run.status == "completed", run.error
    assert run.outputs["sub"] == {"shout": "RAIN!"}


def test_string_values_expand_environment_variables(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, local_agency: Agency
) -> None:
    monkeypatch.setenv("POEM_STYLE", "haiku")
    path = write(TWO_STEPS.replace("Write about {topic}", "Write a ${POEM_STYLE} about {topic}"))
    assert load_workflow(path, agency=local_agency).steps["draft"].prompt == (
        "Write a haiku about {topic}"
    )


# -- which agency -----------------------------------------------------------------------------
def test_a_file_with_llm_tables_builds_its_own_agency(
    write: Callable[..., Path], openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    path = write(
        LLM.format(base_url=openai_fake.base_url)
        + TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmodels = ["backup"]')
    )
    wf = load_workflow(path)
    assert [e.name for e in wf.agency.config.llm.providers] == ["primary", "backup"]
    openai_fake.script(Reply("a draft"), Reply("the final poem"))
    run = wf.run({"topic": "the sea"}, checkpoint=str(tmp_path / "runs.sqlite"))
    assert run.status == "completed", run.error
    assert run.outputs["final"] == "the final poem"
    assert (run.steps["draft"].provider, run.steps["final"].provider) == ("primary", "backup")
    wf.agency.close()


def test_a_file_without_llm_tables_uses_the_config_given(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    config = tmp_path / "agency.toml"
    config.write_text(LLM.format(base_url="http://127.0.0.1:9/v1"), encoding="utf-8")
    path = write(TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmodels = ["backup"]'))
    wf = load_workflow(path, config=config)
    assert wf.agency.config.source == str(config)
    assert wf.steps["final"].models == ("backup",)
    with pytest.raises(ConfigError) as info:
        load_workflow(path, config=AgencyConfig())  # the default config has no "backup" entry
    assert info.value.key == "step[1].models[0]"


def test_load_config_checks_a_combined_file(write: Callable[..., Path]) -> None:
    path = write(
        LLM.format(base_url="http://127.0.0.1:9/v1")
        + TWO_STEPS
        + '\n[workflows]\ncheckpoint = "runs/wf.sqlite"\nmax_concurrency = 3\n'
    )
    config = load_config(path)
    assert config.section("workflow").name == "poem"
    assert [s["name"] for s in config.section("step")] == ["draft", "final"]
    assert workflows_config(config).checkpoint == "runs/wf.sqlite"
    assert workflows_config(config).max_concurrency == 3
    plain = load_config(write(LLM.format(base_url="http://127.0.0.1:9/v1"), "plain.toml"))
    assert plain.section("step") == () and workflows_config(plain).checkpoint is None


def test_max_concurrency_defaults_to_the_workflows_table(
    write: Callable[..., Path], local_agency: Agency
) -> None:
    path = write(TWO_STEPS + "\n[workflows]\nmax_concurrency = 5\n")
    assert load_workflow(path, agency=local_agency).max_concurrency == 5


# -- one ConfigError per malformed file -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key", "problem", "fix"),
    [
        (
            TWO_STEPS.replace('after = ["draft"]', 'aftr = ["draft"]'),
            "step[1].aftr",
            "did you mean 'after'",
            "rename it to 'after'",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["drfat"]'),
            "step[1].after[0]",
            "'drfat' is not a step",
            "name one of ['draft', 'final']",
        ),
        (
            TWO_STEPS.replace('prompt = "Write about {topic}"', 'prompt = "x"\nafter = ["final"]'),
            "step[0].after",
            "cycle: draft -> final -> draft",
            "remove one of these after entries",
        ),
        (
            TWO_STEPS.replace("Improve: {draft}", "Improve: {draft} for {audience}"),
            "step[1].prompt",
            "placeholder {audience} has no source",
            "add 'audience' to the inputs",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = "draft"'),
            "step[1].after",
            "expected a list of step names",
            "set after to a list of step names",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft", 3]'),
            "step[1].after[1]",
            "expected a non-empty string, got an integer 3",
            "make every item of after a non-empty string",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\ntimeout_s = "60"'),
            "step[1].timeout_s",
            "expected a number of seconds above 0, got a string '60'",
            "set timeout_s to a number of seconds above 0",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmax_attempts = 0'),
            "step[1].max_attempts",
            "0 is too small",
            "at least 1",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\ncache = 1'),
            "step[1].cache",
            "expected true or false, got an integer 1",
            "set cache to true or false",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmap = 3'),
            "step[1].map",
            "a list of items, or the name of a list in the state",
            "set map to",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmap = "nothing"'),
            "step[1].map",
            "map names 'nothing'",
            "name one of ['draft', 'final', 'topic']",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nwhen = "x.y"'),
            "step[1].when",
            "attribute is not allowed",
            "write a comparison of state keys",
        ),
        (
            TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nrepeat = "draft"'),
            "step[1].repeat",
            "repeat and until go together",
            "set both repeat",
        ),
        (
            TWO_STEPS.replace(
                'after = ["draft"]', 'after = ["draft"]\nroute = true\ninterrupt = true'
            ),
            "step[1]",
            "must run exactly one of",
            "keep exactly one of prompt, fn, workflow",
        ),
        (
            TWO_STEPS.replace('name = "final"', 'name = "2nd step"'),
            "step[1].name",
            "step name '2nd step'",
            "use a letter or '_' first",
        ),
        (
            TWO_STEPS.replace('name = "final"', 'name = "draft"'),
            "step[1].name",
            "a step named 'draft' already exists",
            "give each step a unique name",
        ),
        (
            TWO_STEPS.replace('name = "final"\n', ""),
            "step[1].name",
            "required key is missing",
            'add name = "step2"',
        ),
        (
            '[workflow]\nname = "empty"\n',
            "step",
            "the workflow has no steps",
            "add a [[step]] table",
        ),
        (
            '[step]\nname = "one"\nprompt = "hi"\n',
            "step",
            "step must be an array of tables, got a table",
            "[[step]] table (two brackets)",
        ),
        (
            "[workflw]\n" + TWO_STEPS.split("\n", 2)[2],
            "workflw",
            "did you mean 'workflow'",
            "rename it to 'workflow'",
        ),
        (
            TWO_STEPS.replace('name = "poem"', 'nme = "poem"'),
            "workflow.nme",
            "did you mean 'name'",
            "rename it to 'name'",
        ),
        (
            TWO_STEPS.replace('inputs = ["topic"]', 'inputs = ["topic"]\nbudget_usd = -1'),
            "workflow.budget_usd",
            "greater than or equal to 0",
            "budget_usd",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-step",
        "cycle",
        "placeholder",
        "after-not-a-list",
        "after-item-type",
        "timeout-type",
        "too-small",
        "bool-type",
        "map-type",
        "map-unknown-key",
        "bad-condition",
        "repeat-without-until",
        "two-kinds",
        "bad-name",
        "duplicate-name",
        "no-name",
        "no-steps",
        "step-not-an-array",
        "unknown-table",
        "unknown-workflow-key",
        "negative-budget",
    ],
)
def test_a_malformed_file_is_one_config_error_with_key_path_and_fix(
    write: Callable[..., Path], local_agency: Agency, text: str, key: str, problem: str, fix: str
) -> None:
    error = _error(write(text), local_agency)
    assert error.key == key
    assert problem in error.problem
    assert error.fix is not None and fix in error.fix
    assert f"[{key}]" in str(error) and "fix:" in str(error)


def test_an_unknown_provider_entry_suggests_the_closest(write: Callable[..., Path]) -> None:
    llm = LLM.format(base_url="http://127.0.0.1:9/v1")
    path = write(
        llm + TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmodels = ["primry"]')
    )
    error = _error(path)
    assert error.key == "step[1].models[0]"
    assert "'primry' is not a provider entry or a 'provider:model' spec" in error.problem
    assert "did you mean 'primary'" in error.problem
    assert error.fix is not None and "['backup', 'openai', 'primary']" in error.fix
    with pytest.raises(ConfigError) as info:  # agency.load_config checks it too
        load_config(path)
    assert info.value.key == "step[1].models[0]"


def test_models_are_checked_against_the_agency_given(
    write: Callable[..., Path], local_agency: Agency
) -> None:
    path = write(TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmodels = ["backup"]'))
    error = _error(path, local_agency)  # the embedded-model agency has no entry "backup"
    assert error.key == "step[1].models[0]"
    spec = write(
        TWO_STEPS.replace('after = ["draft"]', 'after = ["draft"]\nmodels = ["openai:gpt-4o"]')
    )
    assert load_workflow(spec, agency=local_agency).steps["final"].models == ("openai:gpt-4o",)


@pytest.mark.parametrize(
    ("target", "problem", "fix"),
    [
        ("cli_steps", "'cli_steps' does not name a function", 'fn = "package.module:function"'),
        ("no_such_module_xyz:run", "cannot import 'no_such_module_xyz'", "PYTHONPATH"),
        ("cli_steps:shuot", "did you mean 'shout'", "name a function defined in cli_steps"),
        ("cli_steps:NOT_CALLABLE", "is a int, not a function", "def fn(state)"),
    ],
    ids=["no-colon", "no-module", "no-function", "not-callable"],
)
def test_an_fn_that_does_not_import_is_a_config_error(
    write: Callable[..., Path], local_agency: Agency, target: str, problem: str, fix: str
) -> None:
    path = write(f'[[step]]\nname = "one"\nfn = "{target}"\n')
    error = _error(path, local_agency)
    assert error.key == "step[0].fn"
    assert problem in error.problem
    assert error.fix is not None and fix in error.fix


def test_nested_workflow_files_missing_or_in_a_cycle(
    write: Callable[..., Path], local_agency: Agency
) -> None:
    missing = write('[[step]]\nname = "sub"\nworkflow = "nowhere.toml"\n')
    error = _error(missing, local_agency)
    assert error.key == "step[0].workflow" and "no workflow file 'nowhere.toml'" in error.problem

    write('[[step]]\nname = "back"\nworkflow = "a.toml"\n', "b.toml")
    a = write('[[step]]\nname = "sub"\nworkflow = "b.toml"\n', "a.toml")
    with pytest.raises(ConfigError) as info:
        load_workflow(a, agency=local_agency)
    assert info.value.source.endswith("b.toml"), "the error names the file that closes the cycle"
    assert info.value.key == "step[0].workflow"
    assert "cycle: a.toml -> b.toml -> a.toml" in info.value.problem


def test_a_nested_workflow_needs_its_inputs(
    write: Callable[..., Path], local_agency: Agency
) -> None:
    write('[workflow]\ninputs = ["mood"]\n[[step]]\nname = "x"\nprompt = "{mood}"\n', "inner.toml")
    path = write(
        '[workflow]\ninputs = ["topic"]\n[[step]]\nname = "sub"\nworkflow = "inner.toml"\n'
    )
    error = _error(path, local_agency)
    assert error.key == "step[0].workflow" and "input 'mood'" in error.problem


def test_missing_file_and_bad_toml(write: Callable[..., Path], tmp_path: Path) -> None:
    gone = tmp_path / "gone.toml"
    error = _error(gone)
    assert "workflow file not found" in error.problem
    broken = write('[[step]]\nname = "x\n')
    error = _error(broken)
    assert "invalid TOML" in error.problem


def test_workflow_from_dict(local_agency: Agency) -> None:
    wf = workflow_from_dict(
        {"workflow": {"inputs": ["topic"]}, "step": [{"name": "a", "prompt": "{topic}"}]},
        agency=local_agency,
    )
    assert wf.name == "workflow" and list(wf.steps) == ["a"]
    with pytest.raises(ConfigError) as info:
        workflow_from_dict(
            {"step": [{"name": "a", "prompt": "{nope}"}]}, "inline", agency=local_agency
        )
    assert info.value.source == "inline" and info.value.key == "step[0].prompt"


def test_a_step_runs_an_agent_table_of_the_file(
    write: Callable[..., Path], openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    agent = '\n[[agent]]\nname = "forecaster"\nmodels = ["backup"]\ninstructions = "Be brief."\n'
    step = '\n[[step]]\nname = "forecast"\nagent = "forecaster"\nprompt = "Weather in {city}?"\n'
    path = write(
        LLM.format(base_url=openai_fake.base_url) + '[workflow]\ninputs = ["city"]\n' + agent + step
    )
    wf = load_workflow(path)
    assert wf.steps["forecast"].kind == "run"
    openai_fake.script(Reply("Sunny in Oslo."))
    run = wf.run({"city": "Oslo"}, checkpoint=str(tmp_path / "runs.sqlite"))
    assert run.status == "completed", run.error
    assert run.outputs["forecast"] == "Sunny in Oslo."
    assert run.steps["forecast"].provider == "backup"
    body = openai_fake.bodies()[-1]
    assert body["model"] == "gpt-4o" and body["messages"][-1]["content"] == "Weather in Oslo?"
    wf.agency.close()

    unknown = write(
        LLM.format(base_url=openai_fake.base_url) + agent + step.replace("forecaster", "forcaster"),
        "bad.toml",
    )
    error = _error(unknown)
    assert error.key == "step[0].agent" and "no [[agent]] named 'forcaster'" in error.problem
    assert error.fix == "name one of ['forecaster']"
