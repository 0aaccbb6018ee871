"""How ``--help`` reads: flags as flags, values by what they are, arguments by name, defaults shown.

Typer labels every option with its Python type (``--resume <bool>``, ``--set <list[str]>``) and
arguments as ``{folder}``. Every udml command is built with ``UdmlCommand``, which names values
the way Unix help pages do (``--epochs N``, ``--out PATH``, ``--set KEY=VALUE``, ``FOLDER``), shows
nothing after a flag, and shows where an unset option's value comes from (``train.epochs = 600``).
"""

from __future__ import annotations

import typer.core

from udml_cli.config import Config

# options that stand for a config key: their help shows the key and its built-in value
CONFIG_KEYS = {
    "epochs": "train.epochs",
    "backbone": "model.backbone",
    "weights": "model.weights",
    "image_size": "data.image_size",
    "device": "engine.device",
}
METAVARS = {"set_": "KEY=VALUE"}


def _builtin(key: str):
    value = Config.model_construct()  # the defaults, without the method checks (no torch)
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _value_name(param: typer.core.TyperOption) -> str:
    desc = param.type_descriptor
    kind = desc.annotation
    if desc.is_path:
        return "PATH"
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if kind is int or (desc.is_ranged and "int" in str(desc.ranged_type_name)):
        return "N"
    if kind is float or desc.is_ranged:
        return "X"
    return "TEXT"


def polish(params: list, config_defaults: bool) -> None:
    for param in params:
        if isinstance(param, typer.core.TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            _plain_argument(param)
            continue
        if not isinstance(param, typer.core.TyperOption):
            continue
        if param.is_flag:
            param.metavar = ""  # a flag takes no value
            continue
        if param.metavar is None:
            param.metavar = METAVARS.get(param.name or "", _value_name(param))
        key = CONFIG_KEYS.get(param.name or "")
        if config_defaults and key and param.default is None:
            param.show_default = f"{key} = {_builtin(key)}, or the --config's"


def _plain_argument(param: typer.core.TyperArgument) -> None:
    """``FOLDER`` / ``[PATH]`` / ``QUERY...`` in the usage line (Typer writes ``{folder}``), and
    no type column beside the name in the arguments panel."""
    name = param.metavar
    usage = name if param.required else f"[{name}]"
    usage += "..." if param.nargs != 1 and not name.endswith("...") else ""
    param._usage_display_name = lambda: usage
    param.display_type_rich = lambda ctx: ""


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as lines the terminal wraps: Typer keeps every line break of a
    docstring, so at fewer columns than it was written for each source line wrapped on its own
    (a long line, then a stub). Paragraphs marked ``\\b`` (examples) and list items (``- ``) keep
    their breaks."""
    if not text:
        return text
    out = []
    for para in text.split("\n\n"):
        if para.lstrip().startswith("\b"):
            out.append(para)
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            item = line.strip()
            if lines and not item.startswith(("- ", "* ", "• ")):
                lines[-1] += " " + item
            else:
                lines.append(item)
        out.append("\n".join(lines))
    return "\n\n".join(out)


class UdmlCommand(typer.core.TyperCommand):
    """A Typer command whose help follows the rules above."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
        polish(self.params, config_defaults=self.name == "train")

    def get_params(self, ctx):  # the --help and completion options are added late
        params = super().get_params(ctx)
        polish(params, config_defaults=False)
        for param in params:  # lists made from a registry, when this command runs (not at import)
            if param.help and "{backbones}" in param.help:
                from udml_cli.models.backbones import names

                param.help = param.help.replace("{backbones}", ", ".join(names()))
        return params


class UdmlGroup(typer.core.TyperGroup):
    """A command group whose own options (``--version``) read as flags too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
        polish(self.params, config_defaults=False)

    def get_params(self, ctx):  # the --help and completion options are added late
        params = super().get_params(ctx)
        polish(params, config_defaults=False)
        return params


class UdmlTyper(typer.Typer):
    """``typer.Typer`` whose groups and commands are the classes above."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("cls", UdmlGroup)
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(*args, **kwargs)

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", UdmlCommand)
        return super().command(*args, **kwargs)
