"""The ``edgereid`` command: one argparse tree whose subcommands come from the stage packages.

Each stage's ``cli`` module exposes ``register(subparsers)``; heavy imports (torch, onnx,
openvino) happen inside the command functions, so ``edgereid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (module, description) in pipeline order; a stage whose extra is not installed is skipped with a note.
STAGES = (
    ("edgereid.train.cli", "train"),
    ("edgereid.calibration.cli", "calibration"),
    ("edgereid.export.cli", "export"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgereid",
        description="Train, compress, prune, calibrate and export person re-identification ViTs. "
        "The on-device side is the separate `reid-runtime` command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _stage in STAGES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a stage whose optional extra is missing
            if exc.name and exc.name.startswith("edgereid"):
                raise
            continue
        module.register(sub)
    from . import report

    report.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgereid.data.logs import show_logs

    show_logs()  # the stages' progress lines on stderr: "[export] model.onnx: ..."
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as exc:
        # Bad input (a missing folder, a wrong layout, a config field) is reported, not traced back.
        # EDGEREID_DEBUG=1 shows the traceback for bug reports.
        if os.environ.get("EDGEREID_DEBUG"):
            raise
        print(f"edgereid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
