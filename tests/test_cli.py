"""The console script: help everywhere, one-line errors, no TensorFlow for light commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import run_cli

COMMANDS = ["ingest", "validate", "train", "evaluate", "lint", "diagnose", "diff", "bisect", "fix"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, tmp_path):
    r = run_cli(command, "--help", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: losstrace " + command)


def test_every_option_of_every_command_says_what_it_is():
    import argparse

    from losstrace import cli

    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    undescribed = [
        f"{name} {action.dest}"
        for name, parser in commands.choices.items()
        for action in parser._actions
        if not action.help
    ]
    assert undescribed == []


def test_version_and_a_misspelt_command(tmp_path):
    r = run_cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("losstrace ")
    r = run_cli("diagnos", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.strip().endswith("(did you mean diagnose?)")


def test_light_commands_do_not_import_tensorflow():
    code = (
        "import sys; from losstrace import cli; "
        "from losstrace.workflows import runs, fix; from losstrace.explain import diff, report, diagnose; "
        "from losstrace.model import lint; "
        "cli.build_parser(); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_missing_params_file_is_one_line(tmp_path):
    r = run_cli("ingest", "--params", "nope.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: nope.yaml: file not found (run from the project root or pass --params)"


def test_misspelt_params_key_fails_ingest_without_outputs(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  sorce: japanese_vowels\n")
    r = run_cli("ingest", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: params.yaml: unknown key data.sorce (did you mean data.source?)"
    assert not (tmp_path / "data").exists()


def test_unknown_source_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: imagenet\n")
    r = run_cli("ingest", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: params.yaml: unknown data.source 'imagenet' (use one of japanese_vowels")
    assert "Traceback" not in r.stderr


def test_diagnose_without_runs_says_what_to_do(tmp_path):
    r = run_cli("diagnose", cwd=tmp_path)
    assert r.returncode == 2
    assert "no losstrace runs recorded" in r.stderr and "dvc repro" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_fix_without_runs_is_one_line(tmp_path):
    r = run_cli("fix", "latest", "--json", cwd=tmp_path)
    assert r.returncode == 2
    assert "no losstrace runs recorded" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_usage_mistakes_are_one_line_errors_too(tmp_path):
    for args, message in (
        (["diff", "a", "b", "--json", "--md"], "argument --md: not allowed with argument --json"),
        (["bisect", "a", "b", "--seeds", "-1"], "argument --seeds: -1 is negative; use 0 or more"),
        (["diff", "a", "b", "--html", ""], "argument --html: an empty path"),
        (["diff", "a"], "the following arguments are required: run_b"),
    ):
        r = run_cli(*args, cwd=tmp_path)
        command = f"losstrace {args[0]}"
        assert r.returncode == 2 and r.stderr == f"error: {command}: {message} (see `{command} --help`)\n"


def test_an_output_path_that_is_a_file_where_a_folder_is_wanted_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("base: {seed: 42}\n")
    r = run_cli("ingest", "--out", "params.yaml/prepared", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: params.yaml: exists and is not a directory (remove it or choose another path)"
    assert (tmp_path / "params.yaml").read_text() == "base: {seed: 42}\n"


def test_a_params_error_names_the_file_passed_with_params(tmp_path):
    (tmp_path / "exp.yaml").write_text("data:\n  source: imagenet\n")
    r = run_cli("ingest", "--params", "exp.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: exp.yaml: unknown data.source 'imagenet'")


def test_gallery_list_says_how_to_run_one_case(tmp_path):
    r = run_cli("gallery", "--list", cwd=tmp_path)
    assert r.returncode == 0
    assert "noisy_batch" in r.stdout
    assert "run one:   losstrace gallery noisy_batch" in r.stdout
    assert "--epochs" in r.stdout


def test_lint_names_a_builder_or_data_file_dvc_does_not_watch(tmp_path):
    import shutil

    from support import REPO

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets/gru.py").write_text("def build(spec):\n    pass\n")
    (tmp_path / "params.yaml").write_text("train: {model: {builder: 'nets.gru:build'}}\n")
    r = run_cli("lint", cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip() == (
        "error: params.yaml: nets/gru.py is not under train.model.builder_dep=src/losstrace/model/zoo.py, "
        "so DVC would not see it change (set train.model.builder_dep: nets/gru.py)"
    )
    (tmp_path / "reviews.csv").write_text("text,label\ngood,pos\n")
    (tmp_path / "params.yaml").write_text(
        "data: {source: reviews.csv}\ntrain: {model: {builder: 'nets.gru:build', builder_dep: nets}}\n"
    )
    r = run_cli("lint", cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip() == (
        "error: params.yaml: reviews.csv is not under data.source_dep=requirements.lock, "
        "so DVC would not see it change (set data.source_dep: reviews.csv)"
    )


def test_stages_load_keras_without_sklearn_and_leave_it_importable():
    code = (
        "import sys; from losstrace import cli; cli._lean_keras(); import keras; "
        "print('keras' in sys.modules, 'sklearn' in sys.modules); import sklearn; print(sklearn.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "sklearn"]
