"""MkDocs hook: the settings page's table, generated from ``app.settings.Settings`` at build time.

``docs/settings.md`` holds the marker below; each build replaces it with one row per field (the
environment variable, type, default and description), so the page cannot drift from the code.
"""

import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import annotated_types
from mkdocs.exceptions import PluginError
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from app.settings import Settings

MARKER = "<!-- settings-table -->"
PAGE = "settings.md"
TYPE_NAMES = {Path: "path", str: "string", int: "integer", float: "number", bool: "boolean"}


def environment_variable(name: str, field: FieldInfo) -> str:
    """The variable a field is read from: its alias (``WEB_CONCURRENCY``), else ``S4_NAME``."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):  # `X | None`: unset is the None
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if annotation is SecretStr:
        return "string (secret: never logged)"
    if get_origin(annotation) is list:
        return "list of strings: comma-separated, or a JSON list"
    name = TYPE_NAMES[annotation]
    bounds = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds.append(f"≥ {constraint.ge}")
        elif isinstance(constraint, annotated_types.Gt):
            bounds.append(f"> {constraint.gt}")
        elif isinstance(constraint, annotated_types.Le):
            bounds.append(f"≤ {constraint.le}")
    return f"{name}, {' and '.join(bounds)}" if bounds else name


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start-up (see its description)"
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    if isinstance(default, list) and not default:
        return "empty"
    return f"`{default}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """The Markdown table of every setting, in the order ``Settings`` declares them."""
    rows = [
        "| variable | type | default | what it does |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise PluginError(f"app.settings.Settings.{name} has no description")
        rows.append(
            f"| `{environment_variable(name, field)}` | {cell(type_name(field))} "
            f"| {cell(default_text(field))} | {cell(field.description)} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER!r}: the table has nowhere to go")
    return markdown.replace(MARKER, settings_table())
