"""The shared base: padding, datasets, stages and splits, shuffling, files and downloads."""

import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from datamodules import DataFileNotFoundError, PadCollate, SplitNotConfiguredError, SSTDataModule, TokenDataset, pack_tokens


def test_pack_tokens_offsets_and_empty_rows():
    packed = pack_tokens([[5, 6, 7], [], [8]])
    assert packed["tokens"].dtype == np.int32 and packed["tokens"].tolist() == [5, 6, 7, 8]
    assert packed["offsets"].tolist() == [0, 3, 3, 4]


def test_token_dataset_items_and_subset():
    packed = pack_tokens([[1, 2], [3], [4, 5, 6]])
    ds = TokenDataset(packed["tokens"], packed["offsets"], np.array([0, 1, 0]), ids=["a", "b", "c"])
    item = ds[2]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].tolist() == [4, 5, 6]
    assert (item["labels"], item["ids"]) == (0, "c")
    sub = ds.subset(np.array([2, 0]))
    assert len(sub) == 2 and sub[0]["input_ids"].tolist() == [4, 5, 6] and sub[1]["ids"] == "a"
    with pytest.raises(ValueError, match="different lengths"):
        TokenDataset(packed["tokens"], packed["offsets"], ids=["a"])


def test_pad_collate_right_pads_with_eot_and_masks():
    items = [
        {"input_ids": torch.tensor([1, 2, 3]), "labels": 1, "ids": "x"},
        {"input_ids": torch.tensor([4]), "labels": 0, "ids": "y"},
    ]
    batch = PadCollate()(items)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 50256, 50256]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["ids"] == ["x", "y"]
    assert PadCollate(pad_id=0)(items)["input_ids"][1].tolist() == [4, 0, 0]


def write_sst(folder, n=40):
    folder.mkdir(exist_ok=True)
    header = "\tid\tsentence\tsentiment\n"
    (folder / "train.csv").write_text(header + "".join(f"{i}\tt{i}\tsentence number {i} .\t{i % 5}\n" for i in range(n)))
    (folder / "dev.csv").write_text(header + "".join(f"{i}\td{i}\tdev sentence {i}\t{i % 5}\n" for i in range(6)))
    (folder / "test.csv").write_text("0\t\tid\tsentence\n" + "".join(f"{i + 1}\t{i}.0\ts{i}\ttest {i}\n" for i in range(5)))
    return folder


def dm(folder, **kw):
    opts = dict(train_file="train.csv", dev_file="dev.csv", test_file="test.csv", use_cache=False, batch_size=4)
    return SSTDataModule(folder, **{**opts, **kw})


def train_ids(module):
    return [i for batch in module.train_dataloader() for i in batch["ids"]]


def test_stages_build_only_what_they_need(tmp_path):
    module = dm(write_sst(tmp_path))
    module.setup("validate")
    assert module.split_sizes == {"val": 6}
    module.setup("fit")
    module.setup("test")
    assert module.split_sizes == {"val": 6, "train": 40, "test": 5}
    assert module.num_classes == 5 and module.predict_split == "test"


def test_batches_follow_the_contract(tmp_path):
    module = dm(write_sst(tmp_path))
    module.setup()
    train = next(iter(module.train_dataloader()))
    assert set(train) == {"input_ids", "attention_mask", "labels", "ids"}
    assert train["input_ids"].dtype == torch.long and train["input_ids"].shape == train["attention_mask"].shape
    assert train["labels"].shape == (4,) and all(isinstance(i, str) for i in train["ids"])
    test = next(iter(module.test_dataloader()))
    assert "labels" not in test and test["ids"] == ["s0", "s1", "s2", "s3"]


def test_shuffling_is_deterministic_from_the_seed(tmp_path):
    folder = write_sst(tmp_path)
    orders = []
    for seed in (0, 0, 1):
        module = dm(folder, seed=seed)
        module.setup("fit")
        orders.append(train_ids(module))
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert sorted(orders[0]) == sorted(f"t{i}" for i in range(40))
    assert orders[0] != [f"t{i}" for i in range(40)]  # shuffled at all
    val = [i for b in module.val_dataloader() for i in b["ids"]]
    assert val == [f"d{i}" for i in range(6)]  # evaluation order is the file's


def test_predict_split_dev_predicts_on_the_dev_file(tmp_path):
    module = dm(write_sst(tmp_path), predict_split="dev")
    module.setup("predict")
    assert module.split_sizes == {"val": 6}
    assert [i for b in module.predict_dataloader() for i in b["ids"]] == [f"d{i}" for i in range(6)]
    with pytest.raises(ValueError, match="predict_split"):
        dm(tmp_path, predict_split="train")
    with pytest.raises(ValueError, match="'dev_file'"):
        dm(tmp_path, predict_split="dev", dev_file=None).setup("predict")


def test_val_fraction_holds_out_disjoint_rows_fixed_by_seed(tmp_path):
    folder = write_sst(tmp_path)
    module = dm(folder, dev_file=None, val_fraction=0.25, seed=3)
    module.setup("fit")
    train, val = module.datasets["train"].columns["ids"], module.datasets["val"].columns["ids"]
    assert (len(train), len(val)) == (30, 10) and not set(train) & set(val)
    again = dm(folder, dev_file=None, val_fraction=0.25, seed=3)
    again.setup("validate")
    assert again.datasets["val"].columns["ids"] == val
    other = dm(folder, dev_file=None, val_fraction=0.25, seed=4)
    other.setup("validate")
    assert other.datasets["val"].columns["ids"] != val


def test_no_dev_file_means_no_validation(tmp_path):
    module = dm(write_sst(tmp_path), dev_file=None)
    module.setup("fit")
    assert module.val_dataloader() == [] and "val" not in module.split_sizes


def test_missing_files_and_unset_splits_name_the_option(tmp_path):
    module = dm(tmp_path, train_file="nope.csv")
    with pytest.raises(DataFileNotFoundError, match="nope.csv.*'train_file'"):
        module.prepare_data()
    with pytest.raises(DataFileNotFoundError, match="'train_file'"):
        module.setup("fit")
    with pytest.raises(SplitNotConfiguredError, match="`test` needs the test split, but option 'test_file' is not set"):
        dm(write_sst(tmp_path), test_file=None).setup("test")
    with pytest.raises(SplitNotConfiguredError, match="`predict` needs the test split") as err:  # as Lightning calls it
        dm(write_sst(tmp_path), test_file=None).setup(TrainerFn.PREDICTING)
    assert err.value.field == "test_file"
    with pytest.raises(RuntimeError, match="setup"):
        dm(tmp_path).train_dataloader()
    with pytest.raises(ValueError, match="batch_size"):
        dm(tmp_path, batch_size=0)


def test_prepare_data_downloads_missing_files_from_url(tmp_path):
    source = write_sst(tmp_path / "release")
    target = tmp_path / "data"
    module = dm(target, url=source.as_uri())
    module.prepare_data()
    assert (target / "train.csv").read_bytes() == (source / "train.csv").read_bytes()
    module.setup("fit")
    assert module.split_sizes["train"] == 40
    with pytest.raises(DataFileNotFoundError, match="download from .* failed"):
        dm(tmp_path / "other", train_file="absent.csv", url=source.as_uri()).prepare_data()
    assert not list((tmp_path / "other").glob("*.part"))


def test_hyperparameters_are_plain(tmp_path):
    module = dm(tmp_path, seed=7)
    assert module.hparams["seed"] == 7 and module.hparams["train_file"] == "train.csv"
    assert "tokenizer" not in module.hparams


def test_worker_processes_give_the_same_batches(tmp_path):
    folder = write_sst(tmp_path)
    batches = []
    for workers in (0, 1):
        module = dm(folder, num_workers=workers, seed=5)
        module.setup("fit")
        batches.append([b["input_ids"].tolist() for b in module.train_dataloader()])
    assert batches[0] == batches[1]


def test_options_configure_from_the_command_line_as_lightning_cli_does(tmp_path):
    from jsonargparse import ArgumentParser

    from datamodules import QuoraDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(QuoraDataModule, "data")
    args = ["--data.data_dir", str(tmp_path), "--data.batch_size=4", "--data.predict_split=dev", "--data.space_punctuation=true"]
    cfg = parser.parse_args(args)
    module = QuoraDataModule(**vars(cfg.data))
    assert (module.batch_size, module.predict_split, module.space_punctuation) == (4, "dev", True)
