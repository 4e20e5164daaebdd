import sys

import pytest

from ptl_gpt2.cli import entry


def test_a_missing_checkpoint_is_one_line_and_the_traceback_is_one_switch_away(monkeypatch, tmp_path):
    missing = tmp_path / "nope"
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "generate", "--checkpoint", str(missing), "--prompt", "x"])
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == f"ptl-gpt2: error: {missing}: no such checkpoint file or directory " \
        "(hub names: gpt2, gpt2-medium, gpt2-large, gpt2-xl, llama-tiny)"
    monkeypatch.setenv("PTL_GPT2_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        entry()


def sentiment_cli_error(monkeypatch, tmp_path, command: str, data: str, num_classes: int,
                        names: dict[str, str | None], *extra: str) -> str:
    """Run `ptl-gpt2 <command>` with a tiny 5-class SentimentClassifier and the DataModule `data` on
    fixture files labelled with `num_classes` classes (file options `names`, None: unset); return the
    one line it exits with."""
    from tests import fixture_files

    fixture_files.write_sentiment(tmp_path, {k: v for k, v in names.items() if v}, num_classes)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", [
        "ptl-gpt2", command, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--model=ptl_gpt2.tasks.SentimentClassifier", "--model.num_classes=5", "--model.preset=tiny",
        f"--data=datamodules.{data}", f"--data.data_dir={tmp_path}",
        *(f"--data.{option}={'null' if name is None else name}" for option, name in names.items()), *extra,
    ])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        entry()
    return exit_info.value.code


def test_testing_an_unlabelled_split_is_one_line_naming_the_file_and_option(monkeypatch, tmp_path):
    names = {"train_file": "train.csv", "dev_file": "dev.csv", "test_file": "test.csv"}  # test: unlabelled, as released
    assert sentiment_cli_error(monkeypatch, tmp_path, "test", "SSTDataModule", 5, names, "--seed_everything=0") == (
        f"ptl-gpt2: error: {tmp_path / 'test.csv'}: the test split (data.init_args.test_file) has no labels, "
        "so it cannot be scored; `predict` writes its predictions"
    )


def test_predicting_without_a_test_file_is_one_line_naming_the_option(monkeypatch, tmp_path):
    names = {"train_file": "train.csv", "dev_file": "dev.csv", "test_file": None}
    assert sentiment_cli_error(monkeypatch, tmp_path, "predict", "SSTDataModule", 5, names) == (
        "ptl-gpt2: error: SSTDataModule: `predict` needs the test split, but option 'test_file' is not set"
    )


@pytest.mark.parametrize(
    "config, option, message",
    [
        ("sst", "--model.init_args.pretrained={tmp}/none",
         "model.pretrained: {tmp}/none: no such checkpoint file or directory (hub names: gpt2, gpt2-medium, gpt2-large, "
         "gpt2-xl, llama-tiny)"),
        ("sonnet", '--model.init_args.generation={"top_p": 1.5}', "model.generation: top_p must be in (0, 1], got 1.5"),
        ("quora", '--model.init_args.verbalizer=["no", "yes indeed"]',
         "model.verbalizer: 'yes indeed' is 2 GPT-2 tokens [8505, 5600]; it must be exactly one"),
    ],
)  # fmt: skip
def test_a_refused_task_option_is_one_line_though_jsonargparse_wraps_it(monkeypatch, tmp_path, config, option, message):
    # The task raises while LightningCLI builds it; jsonargparse re-raises that as "Does not validate
    # against any of the Union subtypes" with the task's error as its cause.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "fit", "--config", str(root / "configs" / config / "quick.yaml"),
                                      option.replace("{tmp}", str(tmp_path))])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == "ptl-gpt2: error: " + message.replace("{tmp}", str(tmp_path))


def test_a_checkpoint_a_command_cannot_use_is_one_line(monkeypatch, tmp_path):
    import torch

    ckpt = tmp_path / "full.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"preset": "tiny"}}, ckpt)
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "export-adapter", "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == f"ptl-gpt2: error: --checkpoint: {ckpt} was saved by a run with no PEFT callback; " \
        "export needs a LoRA run"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_config_on_a_machine_without_one_is_one_line(monkeypatch):
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "fit", "--config", str(configs / "sst/quick.yaml"),
                                      "--config", str(configs / "sst/bf16.yaml")])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code.startswith("ptl-gpt2: error: trainer.accelerator=gpu: torch sees no such device")


def test_testing_the_sonnets_prompt_only_split_is_one_line(monkeypatch, tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "sonnet" / "quick.yaml"  # the shipped demo corpus
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "test", "--config", str(config), "--trainer.logger=false",
                                      "--trainer.enable_progress_bar=false"])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code.startswith("ptl-gpt2: error: ")
    assert exit_info.value.code.endswith("the test split (data.init_args.test_prompts_file) has no gold text (prompts only), "
                                         "so it cannot be scored; `predict` writes its predictions")


def test_the_command_line_reaches_lightning_cli_without_its_both_args_warning(monkeypatch, recwarn, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "sst" / "quick.yaml"
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "fit", "--config", str(config), "--print_config"])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code in (0, None)
    assert "class_path: ptl_gpt2.tasks.SentimentClassifier" in capsys.readouterr().out
    assert not [w for w in recwarn if "args parameter" in str(w.message)]


def test_a_head_with_other_classes_than_the_data_is_one_line(monkeypatch, tmp_path):
    names = {"train_file": "train.csv", "dev_file": "dev.csv", "test_file": "test.csv"}
    assert sentiment_cli_error(monkeypatch, tmp_path, "validate", "CFIMDBDataModule", 2, names) == (
        "ptl-gpt2: error: model.init_args.num_classes=5, but CFIMDBDataModule has 2 classes; "
        "use a config or checkpoint made for this data (the model options of a --ckpt_path checkpoint replace the config's)"
    )
