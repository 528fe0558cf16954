"""`/start_training` of a hosted app, fuzzed in-process with thousands of generated inputs: each is
started or refused with the project's error naming a field; nothing else escapes, nothing is written
outside the app's runs folder, and the job slot is free again after every accepted run."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from fuzz_inputs import check_answer, mappings, plausible_mappings, yaml_documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import api
from app.context import AppContext, BundleManager
from app.hosting import HostPolicy
from app.runner import Runner

# TND_FUZZ_EXAMPLES raises it for a longer hunt; the default keeps the file near a minute
EXAMPLES = int(os.environ.get("TND_FUZZ_EXAMPLES", "500"))
outcomes: Counter = Counter()


def finish_at_once(config, callbacks=(), control=None) -> dict:
    return {}


@pytest.fixture(scope="module")
def hosted_ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    policy = HostPolicy.from_env({"TND_HOSTED": "1", "TND_DATA_ROOT": str(root / "data")})
    ctx = AppContext(runner=Runner(run_function=finish_at_once), bundle=BundleManager(), policy=policy)
    yield ctx, root
    written = {p.relative_to(root).parts[:2] for p in root.rglob("*")}
    assert written <= {("data",), ("data", "runs")}, sorted(written)[:5]
    assert sum(outcomes.values()) >= 2 * EXAMPLES
    assert outcomes["started"] > EXAMPLES // 20 and outcomes["refused"] > EXAMPLES // 2, outcomes


def start(ctx: AppContext, owner: str, document: str) -> str:
    answer = api.start_training(ctx, owner, document)
    outcome = check_answer(answer, document)
    outcomes[outcome] += 1
    if outcome == "started":
        assert ctx.runner.join(30), "the accepted run did not end"
        assert Path(ctx.runner.store.snapshot().config.output_dir).parent == ctx.policy.runs_root
    return outcome


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=yaml_documents())
def test_any_yaml_is_started_or_refused_naming_a_field(hosted_ctx, document):
    ctx, _ = hosted_ctx
    start(ctx, "alice", document)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.one_of(mappings, plausible_mappings))
def test_mappings_of_real_option_names_are_started_or_refused_naming_a_field(hosted_ctx, changes):
    import yaml

    ctx, _ = hosted_ctx
    start(ctx, "alice", yaml.safe_dump(changes))


def test_valid_small_runs_start_and_run_names_stay_with_their_session(hosted_ctx):
    ctx, _ = hosted_ctx
    for text in ("", "steps: 5", "output_dir: /etc", "output_dir: ../../x\nseed: 4294967295", "steps: 2000"):
        assert start(ctx, "alice", text) == "started", text
    alices = ctx.policy.runs_root / "etc"
    owner_marker = sorted(p.read_bytes() for p in alices.glob(".tnd-*"))
    assert owner_marker, "alice's run folder has its owner marker"
    # another session asking for alice's run name gets a fresh run beside it; alice's stays hers
    assert start(ctx, "a" * 300, "output_dir: etc") == "started"
    theirs = Path(ctx.runner.store.snapshot().config.output_dir)
    assert theirs != alices and theirs.parent == ctx.policy.runs_root
    assert sorted(p.read_bytes() for p in alices.glob(".tnd-*")) == owner_marker
    assert start(ctx, "bob", "output_dir: bobs") == "started"
