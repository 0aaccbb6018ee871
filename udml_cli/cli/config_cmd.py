"""``udml config show``: the resolved configuration as TOML on stdout."""

from __future__ import annotations

from udml_cli.cli.common import ConfigOpt, SetOpt, data_stream, require_data_stream
from udml_cli.cli.help import UdmlTyper

app = UdmlTyper(help="Inspect the run configuration.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults < --config < --set) as TOML on stdout."""
    from udml_cli.config import load_config

    require_data_stream()
    cfg = load_config(config, set_)
    data_stream().write(cfg.to_toml())
    data_stream().flush()
