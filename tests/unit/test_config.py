"""Typed config and presets (cgh.config): presets, typed overrides, unknown keys, wrong types and invalid values
named, YAML round trips; the same errors through ``cgh pretrain`` (one ``error:`` line naming the key, the file or
every invalid value). Fuzzed: tests/system/test_fuzz.py."""

import re

import pytest

from cgh.cli import main
from cgh.config import Config, load_config, parse_overrides, preset_names, to_yaml
from cgh.errors import ConfigError
from tests.helpers import one_error_line

PRESETS = ["cifar10", "cifar100", "stl10", "tinyimagenet", "imagenet", "imagenet_multicrop", "demo"]


def test_all_presets_exist_and_validate():
    assert set(PRESETS) <= set(preset_names())
    for name in PRESETS:
        cfg = load_config(name)
        cfg.validate(world_size=1)
        assert cfg.preset == name


@pytest.mark.parametrize("method", ["cgh", "ressl", "mocov2"])
def test_presets_take_every_method(method):
    load_config("cifar10", [f"method.name={method}"]).validate()


def test_imagenet_preset_carries_the_authors_numbers():
    m, o = load_config("imagenet").method, load_config("imagenet").optim
    assert (m.queue_size, m.momentum, m.feat_dim, m.hid_dim, m.hyper_dim) == (131072, 0.999, 512, 4096, 512)
    assert (m.temp_teacher_global, m.temp_student_global, m.temp_teacher_hyper, m.temp_student_hyper) == (
        0.04, 0.1, 0.08, 0.08)
    assert (o.lr, o.batch_size, o.epochs, o.weight_decay, o.warmup_epochs) == (0.05, 256, 200, 1e-4, 5)
    assert load_config("imagenet_multicrop").method.num_local == 4


def test_overrides_are_typed():
    cfg = load_config("cifar10", ["optim.lr=0.1", "optim.epochs=3", "method.hyper_layers=[layer2,layer4]",
                                  "train.compile=true", "out_dir=runs/x", "data.mean=[0.5,0.5,0.5]"])
    assert cfg.optim.lr == 0.1 and cfg.optim.epochs == 3 and cfg.train.compile is True
    assert cfg.method.hyper_layers == ["layer2", "layer4"] and cfg.out_dir == "runs/x"
    assert cfg.data.mean == [0.5, 0.5, 0.5]
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # an int is a valid float
    assert load_config(None, ["method.hyper_layers=layer4"]).method.hyper_layers == ["layer4"]


def test_unknown_keys_suggest_the_nearest():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        load_config("cifar10", ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"method\.queue_siz.*method\.queue_size"):
        load_config(None, ["method.queue_siz=10"])
    with pytest.raises(ConfigError, match="unknown preset 'cifar1'.*cifar10"):
        load_config("cifar1")


def test_wrong_types_are_named():
    with pytest.raises(ConfigError, match=r"optim\.epochs = 'ten': expected an integer"):
        load_config(None, ["optim.epochs=ten"])
    with pytest.raises(ConfigError, match=r"train\.compile.*true or false"):
        load_config(None, ["train.compile=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match=r"seed = \{'x': 1\}: expected an integer"):
        load_config(None, ["seed.x=1"])  # a value addressed as a section
    with pytest.raises(ConfigError, match="is a value, not a section"):
        parse_overrides(["seed=1", "seed.x=2"])


@pytest.mark.parametrize("override,message", [
    ("method.temp_teacher_global=0", r"method\.temp_teacher_global = 0\.0: expected a positive finite number"),
    ("method.temp_student_hyper=-0.1", "temp_student_hyper"),
    ("optim.lr=0", r"optim\.lr"),
    ("optim.lr=.inf", r"optim\.lr = inf: expected a positive finite number"),
    ("method.temp_teacher_hyper=.nan", r"temp_teacher_hyper = nan"),
    ("method.queue_size=1000", r"method\.queue_size = 1000: expected a multiple of the global batch.*256"),
    ("method.hyper_layers=[layer3,layer5]", r"'layer5' is not a stage"),
    ("method.name=swav", r"method\.name = 'swav'"),
    ("model.bn_splits=3", r"model\.bn_splits = 3: expected a divisor of the per-process batch"),
    ("method.momentum=1.5", r"method\.momentum"),
    ("aug.weak_scale=[0.5,0.2]", r"aug\.weak_scale"),
    ("train.dist_timeout_s=0", r"train\.dist_timeout_s = 0\.0: expected a positive finite number"),
])
def test_invalid_values_are_named(override, message):
    cfg = load_config("cifar10", [override])
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_batch_must_split_over_processes():
    cfg = load_config("cifar10", ["optim.batch_size=256"])
    cfg.validate(world_size=4)
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        cfg.validate(world_size=3)


def test_yaml_file_and_round_trip(tmp_path):
    cfg = load_config("demo", ["optim.epochs=2"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(str(path))
    assert again.to_dict() == cfg.to_dict()
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_defaults_are_complete_and_valid():
    Config().validate()


# ---------------------------------------------------------------------------------------------------------------------
# The same errors through the command line
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("argv, message", [
    (["method.temprature=0.1"], r"unknown config key 'method\.temprature' \(did you mean 'method\.temperature'\?\)"),
    (["optim.batchsize=64"], r"unknown config key 'optim\.batchsize' \(did you mean 'optim\.batch_size'\?\)"),
    (["trian.device=cpu"], r"unknown config key 'trian' \(did you mean 'train'\?\)"),
    (["optim.epochs=ten"], r"optim\.epochs = 'ten': expected an integer"),
])
def test_config_key_errors_through_the_cli(tmp_path, capsys, argv, message):
    assert main(["pretrain", "cifar10", *argv, f"out_dir={tmp_path / 'run'}"]) == 2
    assert re.match(f"error: command line: {message}", one_error_line(capsys.readouterr().err))
    # the same in a YAML file names the file
    path = tmp_path / "my.yaml"
    key, value = argv[0].split("=")
    section, leaf = key.split(".")
    path.write_text(f"{section}:\n  {leaf}: {value}\n")
    assert main(["pretrain", str(path), f"out_dir={tmp_path / 'run'}"]) == 2
    assert re.match(f"error: {re.escape(str(path))}: {message}", one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "run").exists()


TEMPERATURES = ["temperature", "temp_teacher_global", "temp_student_global", "temp_teacher_hyper",
                "temp_student_hyper"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("override, message", [
    *[(f"method.{k}={v}", rf"method\.{k} = {shown}: expected a positive finite number")
      for k in TEMPERATURES for v, shown in (("0", "0.0"), ("-0.1", "-0.1"), (".nan", "nan"))],
    ("optim.lr=-0.1", r"optim\.lr = -0\.1: expected a positive finite number"),
    ("optim.lr=0", r"optim\.lr = 0\.0: expected a positive finite number"),
    ("optim.lr=.nan", r"optim\.lr = nan: expected a positive finite number"),
    ("train.knn_t=0", r"train\.knn_t = 0\.0: expected a positive finite number"),
    ("method.queue_size=1000", r"method\.queue_size = 1000: expected a multiple of the global batch "
                               r"optim\.batch_size \(256\); e\.g\. method\.queue_size=1024"),
    ("method.hyper_layers=[layer3,layer6]", r"'layer6' is not a stage"),
    ("method.hyper_layers=[]", r"method\.hyper_layers = \[\]: expected a non-empty list"),
    ("method.hyper_layers=[layer4,layer4]", r"a non-empty list of distinct names"),
])
def test_invalid_values_are_named_in_one_cli_error(tmp_path, capsys, override, message):
    """Extends test_invalid_values_are_named above: every temperature, zero/negative/NaN, the CLI."""
    with pytest.raises(ConfigError, match=message):
        load_config("cifar10", [override]).validate()
    assert main(["pretrain", "cifar10", override, f"out_dir={tmp_path / 'run'}", "train.device=cpu"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith("error: invalid config:\n  ") and re.search(message, err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_every_invalid_value_is_listed_at_once():
    cfg = load_config("cifar10", ["optim.lr=0", "method.temp_teacher_global=-1", "method.queue_size=100"])
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    listed = str(info.value).splitlines()[1:]
    assert [x.split(" = ")[0].strip() for x in listed] == ["method.temp_teacher_global", "optim.lr",
                                                            "method.queue_size"]


@pytest.mark.usefixtures("one_torch_thread")
def test_queue_must_divide_by_the_global_batch_of_any_process_count():
    cfg = load_config("cifar10", ["optim.batch_size=96", "method.queue_size=4096", "model.bn_mode=shuffle"])
    with pytest.raises(ConfigError, match=r"method\.queue_size = 4096: expected a multiple of the global batch "
                                          r"optim\.batch_size \(96\); e\.g\. method\.queue_size=4128"):
        cfg.validate(world_size=3)


# ---------------------------------------------------------------------------------------------------------------------
# Cross-field errors say which value would fit (issue 18 item 6), and Python callers are not told "command line"
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, overrides, world, message", [
    ("cifar10", ["optim.epochs=2"], 1,
     r"optim\.warmup_epochs = 5: expected fewer than optim\.epochs \(2\).*e\.g\. optim\.warmup_epochs=1 "
     r"\(0: no warm-up\)$"),
    ("cifar10", ["optim.epochs=3", "optim.warmup_epochs=3"], 1, r"e\.g\. optim\.warmup_epochs=1 "),
    ("cifar10", ["model.bn_splits=3"], 1, r"model\.bn_splits = 3: .*; e\.g\. model\.bn_splits=2$"),
    ("cifar10", ["optim.batch_size=255", "method.queue_size=65280", "model.bn_mode=shuffle"], 2,
     r"optim\.batch_size = 255: expected a multiple of the number of processes \(2\); e\.g\. optim\.batch_size=256$"),
    ("cifar10", ["method.name=mocov2", "method.num_local=2"], 1,
     r"method\.num_local = 2: .*; set method\.num_local=0, or method\.name=ressl or cgh$"),
    ("cifar10", ["method.num_local=6"], 1, r"method\.num_local = 6: .*; e\.g\. method\.num_local=4$"),
    ("cifar10", ["optim.schedule=step", "optim.milestones=[60,30]"], 1,
     r"optim\.milestones = \[60, 30\]: expected increasing epochs; e\.g\. optim\.milestones=\[30,60\]$"),
    ("cifar10", ["method.name=mocov2", "aug.teacher_view=weak"], 1,
     r"aug\.teacher_view = 'weak': .*; set aug\.teacher_view=auto$"),
])
def test_cross_field_errors_suggest_a_value_that_fits(preset, overrides, world, message):
    """`cgh pretrain cifar10 optim.epochs=2` failed on the preset's optim.warmup_epochs = 5 without saying what to
    set; each suggested value must then pass."""
    cfg = load_config(preset, overrides)
    with pytest.raises(ConfigError) as info:
        cfg.validate(world)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 1 and re.search(message, lines[0].strip()), lines
    fix = re.search(r"(?:e\.g\.|set) (\S+=\S+)", lines[0]).group(1).rstrip(",")
    load_config(preset, [*overrides, fix]).validate(world)


def test_load_config_errors_from_python_do_not_blame_the_command_line():
    with pytest.raises(ConfigError) as info:
        load_config("cifar10", ["optim.lrr=0.1"])
    assert str(info.value) == "overrides: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"
    with pytest.raises(ConfigError, match=r"^my notebook: optim\.epochs = 'ten': expected an integer$"):
        load_config(None, ["optim.epochs=ten"], origin="my notebook")


# ---------------------------------------------------------------------------------------------------------------------
# Numbers as people write them (issue 23 item 1): 1e-4 is a string to YAML 1.1, on the command line and in a file
# ---------------------------------------------------------------------------------------------------------------------


def numeric_keys(obj=None, prefix=""):
    """(dotted key, type) of every int, float, list[int] and list[float] field of the Config dataclasses."""
    import dataclasses
    import typing

    obj = obj or Config()
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            yield from numeric_keys(value, f"{prefix}{f.name}.")
        elif hint in (int, float) or typing.get_args(hint) in ((int,), (float,)):
            yield f"{prefix}{f.name}", hint


FLOAT_SPELLINGS = {"1e-4": 1e-4, "3E-2": 0.03, ".5": 0.5, "5.": 5.0, "1_000": 1000.0, "-2e-3": -0.002,
                   "1.0e-4": 1e-4, "+1e+3": 1000.0, "2": 2.0}
INT_SPELLINGS = {"1_000": 1000, "1e3": 1000, "3E2": 300, "1.0e3": 1000, "-2": -2, "+7": 7, "12.": 12}


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _as_yaml(key, raw):
    *sections, leaf = key.split(".")
    return "".join(f"{'  ' * i}{s}:\n" for i, s in enumerate(sections)) + f"{'  ' * len(sections)}{leaf}: {raw}\n"


def test_every_numeric_key_takes_every_spelling_on_the_command_line_and_in_yaml(tmp_path):
    """`cgh pretrain demo optim.weight_decay=1e-4` said "expected a number": every int and float key, and every
    element of a list of them, takes 1e-4, 3E-2, .5, 1_000, -2e-3 ... and an int key stays an int."""
    import typing

    keys = dict(numeric_keys())
    assert {"optim.lr", "optim.weight_decay", "optim.epochs", "method.queue_size", "aug.jitter", "optim.milestones",
            "seed"} <= set(keys) and len(keys) > 40
    path = tmp_path / "c.yaml"
    for key, hint in keys.items():
        item = (typing.get_args(hint) or (hint,))[0]
        listed = typing.get_origin(hint) is list
        for raw, want in (FLOAT_SPELLINGS if item is float else INT_SPELLINGS).items():
            for spelt in ([raw, f"[{raw}, {raw}]"] if listed else [raw]):
                expected = [want, want] if spelt.startswith("[") else [want] if listed else want
                got = _get(load_config(None, [f"{key}={spelt}"]), key)
                assert got == expected and type(got) is type(expected), (key, spelt, got)
                if listed:
                    assert all(type(v) is item for v in got), (key, spelt, got)
                path.write_text(_as_yaml(key, spelt))
                assert _get(load_config(str(path)), key) == expected, (key, spelt, "yaml")
        if item is int:
            with pytest.raises(ConfigError, match=rf"^overrides: {re.escape(key)}(\[0\])? = '1e-4': expected an "
                                                  rf"integer \(1e-4 is 0\.0001\)$"):
                load_config(None, [f"{key}=1e-4"])
        for word in ("nan", "1e", "e5", "1e-4x", "."):
            with pytest.raises(ConfigError, match="expected an integer|expected a number"):
                load_config(None, [f"{key}={word}"])


def test_pretrain_print_config_reads_1e_minus_4(capsys):
    assert main(["pretrain", "demo", "optim.weight_decay=1e-4", "optim.lr=3e-2", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "  weight_decay: 0.0001\n" in out and "  lr: 0.03\n" in out
    assert main(["pretrain", "demo", "optim.epochs=1e-4"]) == 2
    assert one_error_line(capsys.readouterr().err).rstrip() == ("error: command line: optim.epochs = '1e-4': "
                                                                "expected an integer (1e-4 is 0.0001)")


# ---------------------------------------------------------------------------------------------------------------------
# A YAML file built on a preset (issue 23 item 2): `preset: demo` was recorded and ignored
# ---------------------------------------------------------------------------------------------------------------------


def test_a_yaml_file_starts_from_the_preset_it_names(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    path.write_text("preset: demo\noptim:\n  lr: 3e-2\nmodel:\n  width: 16\n")
    cfg = load_config(str(path))
    assert cfg.to_dict() == load_config("demo", ["optim.lr=0.03", "model.width=16"]).to_dict()
    assert (cfg.model.arch, cfg.data.image_size, cfg.optim.batch_size, cfg.preset) == ("resnet18", 32, 64, "demo")
    # the command line on top of the file; the resolved config says what came from where, and loads as it is
    assert main(["pretrain", str(path), "optim.epochs=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        "# Resolved config (it loads as it is); built from, later lines overriding earlier ones:",
        "#   defaults      cgh.config.sections", "#   preset        demo",
        f"#   file          {path}: optim.lr, model.width", "#   command line  optim.epochs=3"]
    (tmp_path / "resolved.yaml").write_text(out)
    again = load_config(str(tmp_path / "resolved.yaml"))
    assert again.to_dict() == load_config("demo", ["optim.lr=0.03", "model.width=16", "optim.epochs=3"]).to_dict()


def test_a_yaml_file_on_a_preset_takes_the_presets_recipe_for_its_method(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("preset: cifar10\nmethod:\n  name: mocov2\noptim:\n  epochs: 10\n")
    want = load_config("cifar10", ["method.name=mocov2", "optim.epochs=10"])
    assert load_config(str(path)).to_dict() == want.to_dict()
    assert load_config(str(path)).sources[1] == "preset        cifar10 with its recipes.mocov2"
    assert load_config(str(path), ["method.name=ressl"]).to_dict() == load_config(
        "cifar10", ["method.name=ressl", "optim.epochs=10"]).to_dict()


@pytest.mark.parametrize("text, message", [
    ("preset: demoo\n", r"my\.yaml: preset = 'demoo': expected the name of a preset to start from \(not a file\), "
                        r"one of cifar10, .*demo.* \(did you mean 'demo'\?\)$"),
    ("preset: other.yaml\n", r"preset = 'other\.yaml': expected the name of a preset"),
    ("preset: demo\noptimizer:\n  lr: 0.1\n", r"my\.yaml: unknown config key 'optimizer' \(did you mean 'optim'\?\)$"),
    ("preset: demo\noptim:\n  lrr: 0.1\n", r"my\.yaml: unknown config key 'optim\.lrr'"),
])
def test_a_yaml_files_preset_and_keys_are_checked(tmp_path, capsys, text, message):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    assert main(["pretrain", str(path), "--print-config"]) == 2
    err = one_error_line(capsys.readouterr().err).strip()
    assert re.search(message, err), err


def test_preset_is_not_an_override(capsys):
    assert main(["pretrain", "demo", "preset=cifar10", "--print-config"]) == 2
    assert "a config starts from a preset given as CONFIG" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_the_run_directorys_config_says_where_its_values_came_from(tmp_path, capsys):
    from tests.helpers import TINY

    path, run = tmp_path / "my.yaml", tmp_path / "run"
    path.write_text("preset: cifar10\noptim:\n  epochs: 2\n")
    assert main(["pretrain", str(path), *TINY, "train.max_steps=1", f"out_dir={run}"]) == 0
    header = [x for x in (run / "config.yaml").read_text().splitlines() if x.startswith("#")]
    assert header[2:4] == ["#   preset        cifar10", f"#   file          {path}: optim.epochs"]
    assert header[4].startswith("#   command line  data.name=synthetic")
    assert main(["pretrain", "--resume", str(run), "train.max_steps=2"]) == 0
    header2 = [x for x in (run / "config.yaml").read_text().splitlines() if x.startswith("#")]
    assert header2[:-1] == header
    assert header2[-1] == f"#   resumed from  {run / 'checkpoints' / 'last.pt'}: train.max_steps=2"
    assert load_config(str(run / "config.yaml")).train.max_steps == 2
    capsys.readouterr()


@pytest.mark.parametrize("override,message", [
    ("optim.algorithm=adam", r"optim\.algorithm = 'adam'"),
    ("optim.lars_eta=0", r"optim\.lars_eta = 0"),
    ("method.fix_pred_lr=true", r"method\.fix_pred_lr = True: expected false for cgh"),
    ("method.pred_lr_scale=10", r"method\.pred_lr_scale = 10\.0: expected 1 for cgh"),
    ("method.name=byol method.pred_lr_scale=0", r"method\.pred_lr_scale = 0\.0: expected a positive multiple"),
    ("method.hyper_weight=0", r"method\.hyper_weight = 0\.0: expected a positive weight.*hyper_from_global=false"),
    ("method.csist_weight=-1", r"method\.csist_weight = -1\.0: expected a positive weight.*global_from_hyper=false"),
    ("method.name=ressl method.csist_weight=1", r"method\.csist_weight = 1\.0: expected 0\.5 for ressl"),
])
def test_invalid_optimizer_and_predictor_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cifar10", override.split()).validate()


def test_the_queue_divisibility_applies_to_queue_methods_only():
    load_config("cifar10", ["method.name=simclr", "method.queue_size=1000"]).validate()
    with pytest.raises(ConfigError, match=r"method\.queue_size = 1000"):
        load_config("cifar10", ["method.name=ressl", "method.queue_size=1000"]).validate()


@pytest.mark.parametrize("method", ["byol", "simsiam", "simclr"])
def test_every_preset_has_a_recipe_with_its_source_for_the_symmetric_methods(method):
    from cgh.config import preset_names

    for preset in preset_names():
        cfg = load_config(preset, [f"method.name={method}"])
        cfg.validate()
        assert cfg.recipe and cfg.recipe != load_config(preset).recipe, preset
