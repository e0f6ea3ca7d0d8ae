"""The workflow the kill -9 test runs in a child process (and resumes in the test's).

    python kill9_flow.py BASE_URL CHECKPOINT RUN_ID

Steps: ``a`` -> ``b`` (a map of three branches, in parallel) -> ``c`` -> ``d``; each asks the
fake OpenAI server at BASE_URL, so its request log says which step was sent how often.
"""

from __future__ import annotations

import sys

from agency.app import Agency
from agency.config import AgencyConfig
from agency.workflows import Step, Workflow


def build(base_url: str) -> Workflow:
    config = AgencyConfig.from_toml_str(
        f"""
[[llm.providers]]
name = "main"
provider = "openai"
api_key = "sk-test"
base_url = "{base_url}"
text_model = "gpt-4o-mini"
timeout = 120
"""
    )
    wf = Workflow("kill9", agency=Agency(config))
    wf.add(Step("a", prompt="STEP A"))
    wf.add(Step("b", prompt="STEP B {item}", map=["x", "y", "z"], after=["a"]))
    wf.add(Step("c", prompt="STEP C", after=["b"]))
    wf.add(Step("d", prompt="STEP D", after=["c"]))
    return wf


if __name__ == "__main__":
    base_url, checkpoint, run_id = sys.argv[1:4]
    run = build(base_url).run({}, run_id=run_id, checkpoint=checkpoint)
    print(run.status, flush=True)
