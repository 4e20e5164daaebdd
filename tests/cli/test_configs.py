"""Every shipped config parses, and every quick recipe fits one step and validates once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ptl_gpt2.cli import main
from tests import fixture_files

ROOT = Path(__file__).resolve().parents[2]
# configs/sweeps/ holds grids for `ptl-gpt2 sweep`, not Lightning configs.
CONFIGS = sorted(c for c in (ROOT / "configs").rglob("*.yaml") if "sweeps" not in c.relative_to(ROOT / "configs").parts)


def is_recipe(config: Path) -> bool:
    """A recipe names its task; a fragment (a knob such as knobs/smart.yaml) is stacked on one."""
    return "class_path" in (yaml.safe_load(config.read_text()).get("model") or {})


RECIPES = [c for c in CONFIGS if is_recipe(c)]
FRAGMENTS = [c for c in CONFIGS if not is_recipe(c)]
QUICK = [c for c in RECIPES if c.name.endswith("quick.yaml")]  # quick.yaml, llama-quick.yaml
WRITERS = {
    "SSTDataModule": lambda d, names: fixture_files.write_sentiment(d, names, 5),
    "CFIMDBDataModule": lambda d, names: fixture_files.write_sentiment(d, names, 2),
    "QuoraDataModule": fixture_files.write_quora,
    "BoolQDataModule": fixture_files.write_boolq,
    "TextDataModule": fixture_files.write_text,
}
ONE_STEP = [
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
    "--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=1",
    "--trainer.num_sanity_val_steps=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/, predictions/ and checkpoints land here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["ptl-gpt2"])  # LightningCLI also reads sys.argv


def test_there_is_a_quick_and_a_full_recipe_per_task():
    tasks = {c.parent.name for c in RECIPES}
    assert {"sst", "cfimdb", "quora", "boolq", "sonnet", "lm"} <= tasks
    for task in tasks:
        names = {c.name for c in RECIPES if c.parent.name == task}
        assert {"quick.yaml", "full.yaml"} <= names, task


def print_config(configs: list[Path], capsys) -> dict:
    args = ["fit"] + [arg for c in configs for arg in ("--config", str(c))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", RECIPES, ids=lambda c: f"{c.parent.name}/{c.name}")
def test_recipe_parses(config, capsys):
    printed = print_config([config], capsys)
    assert printed["model"]["class_path"].startswith("ptl_gpt2.tasks.")


@pytest.mark.parametrize("quick", QUICK, ids=lambda c: f"{c.parent.name}/{c.stem}")
@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda c: f"{c.parent.name}/{c.name}")
def test_fragment_stacks_on_every_quick_recipe(fragment, quick, capsys):
    printed = print_config([quick, fragment], capsys)
    expected = yaml.safe_load(quick.read_text())["model"]["class_path"]
    assert printed["model"]["class_path"] == expected  # the fragment changed options, not the task


def fixture_args(config: Path, tmp_path: Path) -> list[str]:
    """Point the config's DataModule at fixture files of the same names."""
    data = yaml.safe_load(config.read_text())["data"]
    kind = data["class_path"].rsplit(".", 1)[-1]
    if kind == "SonnetDataModule":
        return []  # data_dir null: the shipped demo corpus
    args = data["init_args"]
    names = {k: v for k, v in args.items() if k.endswith("_file")}
    defaults = {"SSTDataModule": "sst", "CFIMDBDataModule": "cfimdb"}
    if kind in defaults and not names:
        stem = defaults[kind]
        names = {"train_file": f"ids-{stem}-train.csv", "dev_file": f"ids-{stem}-dev.csv",
                 "test_file": f"ids-{stem}-test-student.csv"}
    WRITERS[kind](tmp_path / "data", names)
    return [f"--data.init_args.data_dir={tmp_path / 'data'}", "--data.init_args.batch_size=4"]


@pytest.mark.parametrize("config", QUICK, ids=lambda c: f"{c.parent.name}/{c.stem}")
def test_quick_recipe_fits_one_step_and_validates(config, tmp_path):
    args = ["fit", "--config", str(config), *ONE_STEP, *fixture_args(config, tmp_path)]
    if config.parent.name == "sonnet":
        args.append('--model.init_args.generation={"max_new_tokens": 8}')
    main(args)
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "no checkpoint written"
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["global_step"] == 1
    assert any(k.startswith("val/") for k in summary["metrics"]), summary["metrics"]


@pytest.mark.parametrize(
    "quick, knob",
    [("sst/quick", "smart"), ("quora/quick", "smart"), ("lm/quick", "smart"), ("lm/llama-quick", "smart"),
     ("sst/quick", "soap")],
    ids=lambda v: v,
)
def test_knob_fits_one_step(quick, knob, tmp_path):
    config = ROOT / "configs" / f"{quick}.yaml"
    main(["fit", "--config", str(config), "--config", str(ROOT / "configs/knobs" / f"{knob}.yaml"),
          *ONE_STEP, *fixture_args(config, tmp_path)])
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["global_step"] == 1 and "train/loss" in summary["metrics"]
    if knob == "smart":
        assert "train/smart_reg" in summary["metrics"]


def test_unknown_task_option_fails_before_training(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/sst/quick.yaml"), "--model.init_args.num_clases=3"])
    assert "num_clases" in capsys.readouterr().err


def test_missing_checkpoint_names_the_option(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="model.pretrained: .*none: no such checkpoint"):
        main(["fit", "--config", str(ROOT / "configs/sst/quick.yaml"), f"--model.init_args.pretrained={tmp_path}/none"])


def test_missing_data_names_the_option(tmp_path):
    from datamodules import DataFileNotFoundError

    with pytest.raises(DataFileNotFoundError, match="train_file"):
        main(["fit", "--config", str(ROOT / "configs/sst/quick.yaml"), f"--data.init_args.data_dir={tmp_path}", *ONE_STEP])


@pytest.mark.parametrize(
    "task, written, header, answers",
    [
        ("sst", "predictions/full-model-sst-test-out.csv", "id \t Predicted_Sentiment \n", {"0", "1", "2", "3", "4"}),
        ("quora", "predictions/para-test-output.csv", "id \t Predicted_Is_Paraphrase \n", {"3919", "8505"}),
        ("boolq", "predictions/boolq-dev-output.csv", "id \t Predicted_Answer \n", {"no", "yes"}),
        ("sonnet", "predictions/generated_sonnets.txt", "--Generated Sonnets-- \n", None),
    ],
)
def test_predict_writes_the_task_file(task, written, header, answers, tmp_path):
    config = ROOT / "configs" / task / "quick.yaml"
    data = fixture_args(config, tmp_path)
    extra = {"sonnet": ['--model.init_args.generation={"max_new_tokens": 8}'],
             "boolq": ["--data.init_args.predict_split=dev"]}.get(task, [])  # boolq/quick has no test file
    main(["fit", "--config", str(config), *ONE_STEP, *data, *extra])
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    main(["predict", "--config", str(config), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          *data, *extra, f"--ckpt_path={checkpoint}"])
    text = (tmp_path / written).read_text()
    assert text.startswith(header)
    if task == "sonnet":
        assert text.count("\n\n\n") >= 2  # one block per test prompt of the demo corpus
    else:
        rows = text.splitlines()[1:]
        if task != "boolq":  # (its dev rows are a held-out share of the training file)
            assert len(rows) == len(fixture_files.SENTENCES if task == "sst" else fixture_files.QUESTIONS)
        assert {row.split(",")[1].strip() for row in rows} <= answers


def test_trainer_clipping_and_accumulation_move_to_smart():
    from jsonargparse import Namespace

    from ptl_gpt2.cli import hand_trainer_options_to_smart

    smart = Namespace(class_path="ptl_gpt2.regularization.SMART", init_args=Namespace(gradient_clip_val=None))
    config = Namespace(
        trainer=Namespace(gradient_clip_val=1.0, accumulate_grad_batches=4),
        model=Namespace(class_path="ptl_gpt2.tasks.LanguageModel", init_args=Namespace(smart=smart)),
    )
    hand_trainer_options_to_smart(config)
    assert (config.trainer.gradient_clip_val, config.trainer.accumulate_grad_batches) == (None, 1)
    assert smart.init_args.gradient_clip_val == 1.0 and smart.init_args.accumulate_grad_batches == 4


def test_default_root_dir_moves_the_default_logs(tmp_path):
    config = ROOT / "configs/sst/quick.yaml"
    one_step_with_logs = [a for a in ONE_STEP if a != "--trainer.logger=false"]
    main(["fit", "--config", str(config), *one_step_with_logs, *fixture_args(config, tmp_path),
          f"--trainer.default_root_dir={tmp_path / 'elsewhere'}"])
    assert not (tmp_path / "runs").exists()
    run = tmp_path / "elsewhere" / "lightning_logs" / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "summary.json").is_file()
    assert list((run / "checkpoints").glob("*.ckpt"))


def test_without_a_logger_the_run_still_lands_under_runs(tmp_path):
    # Lightning's own default_root_dir is the working directory: checkpoints/, config.yaml and
    # summary.json would be written straight into it.
    config = ROOT / "configs/sst/quick.yaml"
    main(["fit", "--config", str(config), *ONE_STEP, *fixture_args(config, tmp_path)])  # ONE_STEP: logger=false
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "summary.json").exists()
    assert (tmp_path / "runs" / "summary.json").is_file() and list((tmp_path / "runs" / "checkpoints").glob("*.ckpt"))
