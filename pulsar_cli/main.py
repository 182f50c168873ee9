"""`pulsar <command> ...`: each command's own module parses the rest of the arguments."""

from __future__ import annotations

import importlib
import sys

# command -> (module with `main(argv: list[str]) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pulsar_cli.demo", "synthetic city -> train -> MLflow -> gate -> serve -> forecasts"),
    "train": ("pulsar_trainer.cli", "train one model, register it in MLflow, publish the event"),
    "serve": ("pulsar_predictor.cli", "serve a registered model over HTTP"),
    "operator": ("pulsar_operator.cli", "run the Kubernetes operator"),
    "data": ("pulsar_core.data.cli", "generate synthetic data, validate and convert exports"),
    "bridge": ("pulsar_bridge.cli", "keep pulsar.signals.<city>.<service> fed from ClickHouse"),
    "deadletters": ("pulsar_core.dead_letters_cli", "list messages and rows set aside as invalid"),
}


def _usage() -> str:
    lines = ["usage: pulsar <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`pulsar <command> --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"pulsar: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
