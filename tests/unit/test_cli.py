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
