"""The app's option form is generated from CustomPPOConfig's metadata and round-trips form <-> config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

from app.forms import Form, config_from_form, control_updates, errors_markdown, field_info, form_values
from tnd_core.config import GROUPS, CustomPPOConfig, field_specs

REPO = Path(__file__).resolve().parents[1]


def _non_default(spec):
    """A valid value different from the default, derived from the spec alone."""
    if spec.type == "bool":
        return not spec.default
    if spec.choices:
        return spec.choices[(spec.choices.index(spec.default) + 1) % len(spec.choices)]
    if spec.type == "int":
        return spec.default + 2
    if spec.type == "float":
        return 0.5 if spec.default in (None, 0.0) else spec.default / 2
    if spec.type == "dict":
        return {"extra": 1}
    return f"{spec.default}_x" if spec.default else "x"


def everything_changed() -> CustomPPOConfig:
    values = {s.name: _non_default(s) for s in field_specs()}
    # combinations the per-field rule cannot know about
    values.update(
        batch_size=24,
        mini_batch_size=6,
        gradient_accumulation_steps=2,
        demo_score="0.5",
        optimizer_name="sgd",
        resume_from_checkpoint="latest",
        # keyword arguments the chosen optimizer and scheduler really take
        optimizer_kwargs={"momentum": 0.5},
        scheduler_name="polynomial",
        scheduler_kwargs={"power": 2.0},
    )
    return CustomPPOConfig.from_dict(values)


def _through_components(form: Form, config: CustomPPOConfig) -> list:
    # what the browser would send back: each control's own postprocess then preprocess
    return [c.preprocess(c.postprocess(v)) for c, v in zip(form.components, form.fill(config))]


@pytest.fixture(scope="module")
def form() -> Form:
    form = Form()
    with gr.Blocks():
        for group in dict.fromkeys(s.group for s in field_specs()):
            form.add_group(group, CustomPPOConfig())
    return form


def test_app_form_has_a_control_for_every_field():
    from app.context import AppContext, BundleManager
    from app.runner import Runner
    from app.ui import build_app

    # a context whose bundle is never prepared: the form does not need it
    _, form = build_app(AppContext(runner=Runner(run_function=lambda *a, **k: {}), bundle=BundleManager()))
    assert form.missing() == []
    assert form.names == [s.name for s in field_specs()]
    for spec, component in zip(field_specs(), form.components):
        assert component.label == spec.name
        assert spec.help in component.info


def test_control_kind_follows_metadata(form):
    for spec, control in zip(field_specs(), form.components):
        if spec.type == "bool":
            assert isinstance(control, gr.Checkbox), spec.name
        elif spec.choices:
            assert isinstance(control, gr.Dropdown), spec.name
            assert [c[1] for c in control.choices] == list(spec.choices)
        elif spec.optional or spec.type in ("str", "dict"):
            assert isinstance(control, gr.Textbox), spec.name
        else:
            assert isinstance(control, gr.Number), spec.name
            assert control.precision == (0 if spec.type == "int" else None), spec.name


def test_every_field_changed_round_trips(form):
    changed = everything_changed()
    default = CustomPPOConfig()
    assert all(getattr(changed, s.name) != getattr(default, s.name) for s in field_specs())
    config, errors = form.read(_through_components(form, changed))
    assert errors == []
    assert config == changed


def test_defaults_round_trip(form):
    config, errors = form.read(_through_components(form, CustomPPOConfig()))
    assert errors == [] and config == CustomPPOConfig()


def test_empty_optional_number_means_none_and_text_becomes_a_number(form):
    values = dict(zip(form.names, form.fill(CustomPPOConfig())))
    values.update(max_grad_norm="", score_clip=" 2.5 ", optimizer_kwargs='{"weight_decay": 0.01}')
    config, errors = form.read([values[n] for n in form.names])
    assert errors == []
    assert config.max_grad_norm is None and config.score_clip == 2.5
    assert config.optimizer_kwargs == {"weight_decay": 0.01}


def test_bad_values_are_reported_per_field(form):
    values = dict(zip(form.names, form.fill(CustomPPOConfig())))
    values.update(score_clip="lots", optimizer_kwargs="[1, 2]", learning_rate=-1.0, steps=None)
    config, errors = config_from_form(form.names, [values[n] for n in form.names])
    assert config is None
    assert {e.field for e in errors} == {"score_clip", "optimizer_kwargs", "steps"}
    # once the parse errors are fixed, the range check names the next field
    values.update(score_clip="", optimizer_kwargs="{}", steps=10)
    config, errors = config_from_form(form.names, [values[n] for n in form.names])
    assert [e.field for e in errors] == ["learning_rate"]
    assert "> 0" in errors[0].allowed


def test_combination_errors_show_next_to_their_field(form):
    values = dict(zip(form.names, form.fill(CustomPPOConfig())))
    values.update(batch_size=10, mini_batch_size=4)
    config, errors = form.read([values[n] for n in form.names])
    assert config is None and [e.field for e in errors] == ["batch_size"]
    updates = dict(zip(form.names, control_updates(form.names, errors)))
    assert updates["batch_size"]["info"].startswith("⚠ must be a multiple of mini_batch_size")
    assert updates["batch_size"]["elem_classes"] == ["tnd-invalid"]
    assert updates["mini_batch_size"]["elem_classes"] == [] and "⚠" not in updates["mini_batch_size"]["info"]
    assert "**batch_size**" in errors_markdown(errors)


def test_info_lists_allowed_values():
    specs = {s.name: s for s in field_specs()}
    assert "one of kl, abs, mse, full" in field_info(specs["kl_penalty"])
    assert field_info(specs["gamma"]).endswith("(>= 0 and <= 1)")
    assert field_info(specs["max_grad_norm"]).endswith("(> 0 and <= 1e+06; empty for none)")


def test_form_values_show_text_for_json_and_optional(form):
    shown = dict(
        zip(
            form.names,
            form_values(
                CustomPPOConfig(score_clip=None, scheduler_name="polynomial", scheduler_kwargs={"power": 2.0}),
                form.names,
            ),
        )
    )
    assert shown["score_clip"] == "" and shown["scheduler_kwargs"] == '{"power": 2.0}'
    assert shown["batch_size"] == 16 and shown["adap_kl_ctrl"] is True


def test_groups_without_controls_are_what_the_config_tab_shows():
    form = Form()
    with gr.Blocks():
        assert form.groups_without_controls() == list(GROUPS)
        form.add_group("models", CustomPPOConfig())
        form.add_group("data", CustomPPOConfig())
    assert form.groups_without_controls() == [g for g in GROUPS if g not in ("models", "data")]


def test_importing_the_forms_and_config_pieces_does_not_load_torch():
    code = (
        "import sys\n"
        "import app.forms, app.context, app.runner, app.services, app.config_tab\n"
        "loaded = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_tabs_and_the_api_never_import_each_other():
    modules = [*sorted((REPO / "app").glob("*_tab.py")), REPO / "app" / "api.py"]
    names = {f"app.{path.stem}" for path in modules}
    assert len(names) >= 7
    crossings = {f"app.{p.stem}": sorted(_imported_modules(p) & (names - {f"app.{p.stem}"})) for p in modules}
    assert {module: imports for module, imports in crossings.items() if imports} == {}
