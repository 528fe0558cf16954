"""Form controls generated from CustomPPOConfig's field metadata, and the form <-> config round trip.

Nothing here lists options by hand: each control comes from a `FieldSpec` (type, choices, bounds,
help). Values go back through `parse_value` and the config's own validation, so the form accepts
exactly what the CLI and the YAML files accept.
"""

from __future__ import annotations

import json
import math
from typing import Any

import gradio as gr

from tnd_core.config import CustomPPOConfig, FieldSpec, field_specs, parse_value, specs_by_group
from tnd_core.errors import ConfigError


def field_info(spec: FieldSpec) -> str:
    """Help text of a control: the field's help plus its allowed values."""
    extra = spec.bounds_text()
    if spec.choices:
        extra = f"one of {', '.join(spec.choices)}"
    if spec.optional:
        extra = f"{extra}; empty for none" if extra else "empty for none"
    return f"{spec.help} ({extra})" if extra else spec.help


def _float_step(default: Any) -> float:
    if isinstance(default, (int, float)) and default:
        return 10.0 ** math.floor(math.log10(abs(default)))
    return 0.1


def make_control(spec: FieldSpec, value: Any = None, locked: str | None = None) -> gr.components.Component:
    """One Gradio control for an option, created in the current Blocks context; a `locked` control
    shows its value read-only, with the reason after its help text."""
    value = spec.default if value is None and not spec.optional else value
    info = field_info(spec) if locked is None else f"{field_info(spec)} {locked}"
    common = {"label": spec.name, "info": info, "elem_id": f"cfg-{spec.name}"}
    if locked is not None:
        common["interactive"] = False
    if spec.type == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if spec.choices:
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.optional or spec.type in ("str", "dict"):
        return gr.Textbox(value=to_form_value(spec, value), max_lines=1, **common)
    if spec.type == "int":
        return gr.Number(value=value, precision=0, step=1, **common)
    return gr.Number(value=value, step=_float_step(spec.default), **common)


def to_form_value(spec: FieldSpec, value: Any) -> Any:
    """What a control displays for a config value (text for optional numbers and JSON objects)."""
    if spec.type == "dict":
        return json.dumps(value or {})
    if spec.optional or spec.type == "str":
        return "" if value is None else str(value)
    return value


def form_values(config: CustomPPOConfig, names: list[str]) -> list[Any]:
    """Display values of `names` for a config, in order (to fill the controls)."""
    specs = {s.name: s for s in field_specs()}
    return [to_form_value(specs[n], getattr(config, n)) for n in names]


def parse_form(names: list[str], raw_values: list[Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """Typed values of the controls; fields that cannot be converted become ConfigErrors."""
    specs = {s.name: s for s in field_specs()}
    values, errors = {}, []
    for name, raw in zip(names, raw_values):
        spec = specs[name]
        if raw is None and not spec.optional:
            errors.append(ConfigError(name, raw, f"required {spec.type}"))
            continue
        try:
            values[name] = None if raw is None else _parse(spec, raw)
        except ConfigError as exc:
            errors.append(exc)
    return values, errors


def _parse(spec: FieldSpec, raw: Any) -> Any:
    if spec.type == "str" and not spec.optional:
        return str(raw)
    return parse_value(spec, raw)


def config_from_form(names: list[str], raw_values: list[Any]) -> tuple[CustomPPOConfig | None, list[ConfigError]]:
    """The config the controls describe, or every problem with them (field errors, then combinations)."""
    values, errors = parse_form(names, raw_values)
    if errors:
        return None, errors
    candidate = CustomPPOConfig()
    for name, value in values.items():
        setattr(candidate, name, value)
    errors = candidate.errors()
    if errors:
        return None, errors
    return CustomPPOConfig.from_dict(candidate.to_dict()), []


def errors_markdown(errors: list[ConfigError]) -> str:
    """A short list of problems, each naming the field."""
    if not errors:
        return "Config OK."
    return "\n".join(f"- **{e.field}** = `{e.value!r}`: {e.allowed}" for e in errors)


def control_updates(names: list[str], errors: list[ConfigError]) -> list[dict]:
    """Per-control updates that put each error under its field and restore the help text elsewhere."""
    specs = {s.name: s for s in field_specs()}
    by_field = {e.field: e for e in errors}
    updates = []
    for name in names:
        info = field_info(specs[name])
        if name in by_field:
            info = f"⚠ {by_field[name].allowed}. {info}".replace("*", "\\*")
        updates.append(gr.update(info=info, elem_classes=["tnd-invalid"] if name in by_field else []))
    return updates


class Form:
    """The option controls of every tab, kept in `field_specs()` order so values line up with names."""

    def __init__(self, locked: dict[str, str] | None = None) -> None:
        self.controls: dict[str, gr.components.Component] = {}
        # options the host does not let visitors change, with the reason shown under each
        self.locked = dict(locked or {})

    def add_group(self, group: str, config: CustomPPOConfig) -> dict[str, gr.components.Component]:
        """Create the controls of one option group in the current Blocks context."""
        created = {
            s.name: make_control(s, getattr(config, s.name), self.locked.get(s.name))
            for s in field_specs()
            if s.group == group
        }
        self.controls.update(created)
        return created

    @property
    def names(self) -> list[str]:
        order = [s.name for s in field_specs()]
        return [n for n in order if n in self.controls]

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.controls[n] for n in self.names]

    def groups_without_controls(self) -> list[str]:
        """Option groups none of whose options has a control yet, in display order."""
        grouped = specs_by_group().items()
        return [group for group, specs in grouped if specs and not any(s.name in self.controls for s in specs)]

    def missing(self) -> list[str]:
        """Options that have no control yet (empty once every tab is built)."""
        return [s.name for s in field_specs() if s.name not in self.controls]

    def read(self, raw_values: list[Any]) -> tuple[CustomPPOConfig | None, list[ConfigError]]:
        """The config described by the controls' values (given in `components` order)."""
        return config_from_form(self.names, list(raw_values))

    def fill(self, config: CustomPPOConfig) -> list[Any]:
        """Values that set every control to `config`."""
        return form_values(config, self.names)
