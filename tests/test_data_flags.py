"""Flags derived from config dataclasses (edgereid.data.flags): a setting is one field, with its help."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest
from edgereid.data.flags import add_options, comma_list, int_list, option, option_fields, options_from_args

LEVELS = ["low", "high"]


@dataclass
class Demo:
    epochs: int = option(12, "training epochs")
    rate: float | None = option(None, "a rate (default: none)", show_default=False)
    amp: bool = option(True, "disable mixed precision", flag="--no-amp")
    quiet: bool = option(False, "say less")
    level: str = option("low", "how hard", choices=lambda: LEVELS)
    layers: list[int] | None = option(None, "blocks, e.g. 3,6,9", type=int_list)
    caps: list[str] | None = option(None, "compute capabilities", flag="--cc", type=comma_list)
    hidden: int = 7  # not a flag


def parse(argv, **kw):
    p = argparse.ArgumentParser()
    add_options(p, Demo, **kw)
    return p, p.parse_args(argv)


def test_flags_types_defaults_and_help_come_from_the_fields():
    p, args = parse([])
    assert options_from_args(Demo, args) == Demo()
    _, args = parse(["--epochs", "3", "--rate", "0.5", "--no-amp", "--quiet", "--level", "high", "--layers", "3,6",
                     "--cc", "8.6, 8.9"])
    assert options_from_args(Demo, args) == Demo(3, 0.5, False, True, "high", [3, 6], ["8.6", "8.9"])
    text = p.format_help()
    assert "training epochs (default 12)" in text and "--no-amp" in text and "{low,high}" in text
    assert "--hidden" not in text and [f.name for f in option_fields(Demo)][-1] == "caps"
    with pytest.raises(SystemExit):
        parse(["--level", "medium"])


def test_per_command_defaults_required_and_subsets():
    p, args = parse(["--level", "high"], only=("epochs", "level"), defaults={"epochs": 30}, required=("level",))
    assert vars(args) == {"epochs": 30, "level": "high"}
    assert options_from_args(Demo, args, hidden=1) == Demo(epochs=30, level="high", hidden=1)
    with pytest.raises(SystemExit):
        parse([], only=("level",), required=("level",))
    with pytest.raises(ValueError, match="not option fields"):
        parse([], only=("hidden",))


def test_a_field_whose_type_cannot_be_parsed_must_say_how():
    @dataclass
    class Bad:
        size: tuple[int, int] = option((1, 2), "a size")

    with pytest.raises(TypeError, match=r"Bad.size: .* needs option\(type=...\)"):
        add_options(argparse.ArgumentParser(), Bad)
    with pytest.raises(ValueError, match="help"):
        option(1)
    assert dataclasses.fields(Demo)[0].default == 12


def test_every_command_offers_the_option_fields_of_its_configs():
    from edgereid.data.synth import SynthConfig
    from edgereid.export.bundle import ExportOptions
    from edgereid.runtime.bench import BenchConfig
    from edgereid.runtime.cli import build_parsers
    from edgereid.runtime.embedder import EmbedderConfig
    from edgereid.runtime.engine_build import EngineBuildConfig
    from edgereid.runtime.matcher import MatchConfig
    from edgereid.train.compress.methods import CompressConfig
    from edgereid.train.config import DistillConfig, TrainConfig
    from edgereid.train.prune.config import PruneConfig

    from edgereid.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    runtime = build_parsers()
    commands = {
        "train": (sub["train"], [TrainConfig]), "compress": (sub["compress"], [TrainConfig, CompressConfig]),
        "prune": (sub["prune"], [PruneConfig, DistillConfig]), "export": (sub["export"], [ExportOptions]),
        "synth": (sub["synth"], [SynthConfig]), "bench": (runtime["bench"], [EmbedderConfig, BenchConfig]),
        "build-engine": (runtime["build-engine"], [EngineBuildConfig]),
        "match": (runtime["match"], [EmbedderConfig, MatchConfig]),
    }
    for name, (parser, configs) in commands.items():
        dests = {a.dest for a in parser._actions}
        for cfg in configs:
            missing = [f.name for f in option_fields(cfg) if f.name not in dests]
            assert not missing, (name, cfg.__name__, missing)


def test_read_json_object_names_the_file_the_place_and_what_was_expected(tmp_path):
    from edgereid.data.json_file import read_json_object

    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json_object(tmp_path / "ok.json") == {"a": 1}
    (tmp_path / "bad.json").write_text('{\n  "a": 1,,\n}')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON \(.* line 2 column 10\); expected a config"):
        read_json_object(tmp_path / "bad.json", "a config")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="list.json: expected a JSON object, got a JSON list"):
        read_json_object(tmp_path / "list.json")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match="latin1.json: not UTF-8 text"):
        read_json_object(tmp_path / "latin1.json")
