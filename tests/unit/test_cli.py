"""The command line (cgh.cli), in-process: every command's help renders, and user errors are one line with exit code 2.

The installed entry point run as a process: tests/system/test_cli.py."""


import pytest

from cgh.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert command in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["pretrain", "cifar10", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'optim.lr'" in err and "Traceback" not in err
    assert main(["pretrain", "nosuchpreset"]) == 2
    assert main(["knn", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_print_config(capsys):
    assert main(["pretrain", "cifar10", "optim.epochs=7", "--print-config"]) == 0
    assert "epochs: 7" in capsys.readouterr().out


# ---- options and key=value overrides in any order (issue 18) ---------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["pretrain", "demo", "--print-config", "out_dir=runs/x", "optim.epochs=2"],
    ["pretrain", "demo", "out_dir=runs/x", "--print-config", "optim.epochs=2"],
    ["pretrain", "--print-config", "demo", "out_dir=runs/x", "optim.epochs=2"],
])
def test_pretrain_options_and_overrides_in_any_order(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epochs: 2" in out and "out_dir: runs/x" in out


@pytest.mark.usefixtures("one_torch_thread")
def test_the_users_command_with_an_option_before_the_overrides(tmp_path, capsys):
    """`cgh pretrain demo --overwrite out_dir=runs/x optim.epochs=2` failed with "unrecognized arguments"."""
    from tests.helpers import TINY

    out = tmp_path / "x"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "an earlier run"}\n')
    assert main(["pretrain", "cifar10", *TINY[:4], "--overwrite", f"out_dir={out}", *TINY[4:], "optim.epochs=2",
                 "train.max_steps=1"]) == 0
    assert (out / "checkpoints" / "last.pt").exists() and "earlier" not in (out / "metrics.jsonl").read_text()
    assert "epochs: 2" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("command, argv, expected", [
    ("cost", ["cost", "--json", "demo", "--batch-size", "8", "model.width=4", "--repeats", "1", "optim.lr=0.1"],
     {"config": "demo", "overrides": ["model.width=4", "optim.lr=0.1"], "batch_size": 8, "repeats": 1}),
    ("demo", ["demo", "optim.epochs=2", "--quick", "method.queue_size=256", "--no-cost"],
     {"overrides": ["optim.epochs=2", "method.queue_size=256"], "quick": True, "no_cost": True}),
    ("pretrain", ["pretrain", "--resume", "runs/x", "optim.epochs=9", "--overwrite", "train.log_every=5"],
     {"resume": "runs/x", "config": "optim.epochs=9", "overrides": ["train.log_every=5"], "overwrite": True}),
])
def test_every_command_with_overrides_takes_them_around_its_options(monkeypatch, command, argv, expected):
    import importlib

    from cgh.cli import COMMANDS

    seen = {}
    module = importlib.import_module(COMMANDS[command][0])
    monkeypatch.setattr(module, "run", lambda args: seen.update(vars(args)) or 0)
    assert main(argv) == 0
    assert {k: seen[k] for k in expected} == expected


def test_a_misspelt_option_is_blamed_not_the_overrides(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "demo", "--overwite", "out_dir=runs/x", "optim.epochs=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("cgh pretrain: error: unrecognized arguments: --overwite (did you mean "
                                    "--overwrite?)")


def test_resume_followed_by_an_override_resumes_the_run_in_out_dir(tmp_path, capsys):
    """`--resume out_dir=RUN`: --resume's optional value is an override here, not a run directory."""
    assert main(["pretrain", "--resume", f"out_dir={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: nothing to resume: {tmp_path / 'none'} does not exist\n"
