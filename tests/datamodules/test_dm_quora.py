"""Quora: both release layouts, quoting, labels, the template and the reference preprocessing."""

import pytest

from datamodules import DataFormatError, QuoraDataModule
from datamodules.quora import PARAPHRASE_TEMPLATE, space_punctuation

GPT2_LAYOUT = (
    "id\tsentence1\tsentence2\tis_duplicate\n"
    "65977 641bc8de\tHow do I learn AI?\tHow can I learn AI?\t1.0\n"
    '176826 a9b4a342\t"What is ""deep"" learning?"\tWhat is a GPU?\t0.0\n'
)
MINBERT_LAYOUT = (
    "\tid\tsentence1\tsentence2\tis_duplicate\n"
    "290564\tfbfddc56\tWhat can you get, as a customer?\tWho's there?\t0.0\n"
    '318737\t318658e2\t"""Quoted"" start"\tOther one.\t1.0\n'
)
TEST_LAYOUT = "id\tsentence1\tsentence2\n216588 82310944\tIs it?\tIs it not?\n"


def reference_preprocess_string(s):
    # The CS224N reference's preprocessing (datasets.py), copied for comparison.
    return " ".join(s.lower().replace(".", " .").replace("?", " ?").replace(",", " ,").replace("'", " '").split())


def quora(folder, **kw):
    opts = dict(train_file="train.csv", dev_file=None, test_file=None, use_cache=False, batch_size=8)
    return QuoraDataModule(folder, **{**opts, **kw})


def write(folder, name, text):
    (folder / name).write_text(text)


def decode(module, split, i):
    return module.tokenizer.decode(module.datasets[split][i]["input_ids"].tolist())


@pytest.mark.parametrize("layout", [GPT2_LAYOUT, MINBERT_LAYOUT])
def test_both_layouts_read_labels_ids_and_quotes(tmp_path, layout):
    write(tmp_path, "train.csv", layout)
    module = quora(tmp_path)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert module.num_classes == 2 and module.split_sizes == {"train": 2}
    rows = dict(zip(batch["ids"], batch["labels"].tolist()))
    expected_ids = ["65977 641bc8de", "176826 a9b4a342"] if layout is GPT2_LAYOUT else ["fbfddc56", "318658e2"]
    assert rows == dict(zip(expected_ids, [1, 0] if layout is GPT2_LAYOUT else [0, 1]))
    quoted = decode(module, "train", 1)
    assert ('"What is "deep" learning?"' if layout is GPT2_LAYOUT else '""Quoted" start"') in quoted


def test_default_template_renders_the_cloze_prompt(tmp_path):
    write(tmp_path, "train.csv", GPT2_LAYOUT)
    module = quora(tmp_path)
    module.setup("fit")
    assert decode(module, "train", 0) == (
        'Question 1: "How do I learn AI?"\nQuestion 2: "How can I learn AI?"\n'
        "Are these questions asking the same thing?\nAnswer:"
    )
    assert PARAPHRASE_TEMPLATE.endswith("\nAnswer:")


def test_template_is_configurable_and_checked(tmp_path):
    write(tmp_path, "train.csv", GPT2_LAYOUT)
    module = quora(tmp_path, template='Is "{sentence1}" a paraphrase of "{sentence2}"? Answer:')
    module.setup("fit")
    assert decode(module, "train", 0) == 'Is "How do I learn AI?" a paraphrase of "How can I learn AI?"? Answer:'
    with pytest.raises(DataFormatError, match="only has") as err:
        quora(tmp_path, template="{question}").setup("fit")
    assert err.value.field == "question"


@pytest.mark.parametrize("text", ["What's up, doc?", "  Is it A.I.?Yes,  it's  ", "no punctuation", "Mr. O'Neil's U.S. trip..."])
def test_lowercase_plus_space_punctuation_is_the_reference_preprocessing(text):
    assert space_punctuation(text.strip().lower()) == reference_preprocess_string(text)


def test_reference_preprocessing_options_reach_the_tokens(tmp_path):
    write(tmp_path, "train.csv", GPT2_LAYOUT)
    module = quora(tmp_path, lowercase=True, space_punctuation=True, template="{sentence1} | {sentence2}")
    module.setup("fit")
    assert decode(module, "train", 0) == "how do i learn ai ? | how can i learn ai ?"


def test_unlabelled_test_file_and_predict_on_dev(tmp_path):
    write(tmp_path, "train.csv", GPT2_LAYOUT)
    write(tmp_path, "dev.csv", MINBERT_LAYOUT)
    write(tmp_path, "test.csv", TEST_LAYOUT)
    module = quora(tmp_path, dev_file="dev.csv", test_file="test.csv")
    module.setup("predict")
    batch = next(iter(module.predict_dataloader()))
    assert batch["ids"] == ["216588 82310944"] and "labels" not in batch
    dev = quora(tmp_path, dev_file="dev.csv", predict_split="dev")
    dev.setup("predict")
    batch = next(iter(dev.predict_dataloader()))
    assert batch["ids"] == ["fbfddc56", "318658e2"] and batch["labels"].tolist() == [0, 1]


def test_empty_label_is_reported_or_skipped(tmp_path, caplog):
    write(tmp_path, "train.csv", MINBERT_LAYOUT + '5\tabc\tq?\t"""Broken quote?"\t\n')
    with pytest.raises(DataFormatError, match="empty label") as err:
        quora(tmp_path).setup("fit")
    assert (err.value.file.name, err.value.line, err.value.field) == ("train.csv", 4, "is_duplicate")
    module = quora(tmp_path, skip_unlabeled=True)
    module.setup("fit")
    assert module.split_sizes == {"train": 2} and "skipped 1 rows with an empty 'is_duplicate'" in caplog.text


@pytest.mark.parametrize("line, message, field", [
    ("1\tq\tr\t2.0\n", "out of range", "is_duplicate"),
    ("1\tq\tr\tyes\n", "not a number", "is_duplicate"),
    ("1\tq\tr\n", "expected 4 tab-separated fields", "is_duplicate"),
])
def test_malformed_rows_name_line_and_field(tmp_path, line, message, field):
    write(tmp_path, "train.csv", GPT2_LAYOUT + line)
    with pytest.raises(DataFormatError, match=message) as err:
        quora(tmp_path).setup("fit")
    assert (err.value.line, err.value.field) == (4, field)


def test_missing_sentence_column(tmp_path):
    write(tmp_path, "train.csv", "id\tsentence1\tis_duplicate\n1\tq\t0.0\n")
    with pytest.raises(DataFormatError, match="sentence2"):
        quora(tmp_path).setup("fit")


def test_long_questions_lose_their_end_not_the_cue(tmp_path, caplog):
    write(tmp_path, "train.csv", "id\tsentence1\tsentence2\tis_duplicate\n1\t" + "why " * 200 + "\tshort?\t0.0\n")
    module = quora(tmp_path, max_length=64)
    module.setup("fit")
    text = decode(module, "train", 0)
    assert len(module.datasets["train"][0]["input_ids"]) <= 64
    assert text.endswith('"\nQuestion 2: "short?"\nAre these questions asking the same thing?\nAnswer:')
    assert "1 of 1 prompts were longer than max_length=64" in caplog.text


def test_a_cached_note_names_the_file_given_now_not_the_one_that_filled_the_cache(tmp_path, caplog):
    text = MINBERT_LAYOUT + '5\tabc\tq?\t"""Broken quote?"\t\n'
    for folder in ("first", "second"):  # the same bytes under two paths: one cache entry
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, "train.csv", text)
    cache = tmp_path / "cache"
    caplog.set_level("INFO", logger="datamodules")
    quora(tmp_path / "first", skip_unlabeled=True, use_cache=True, cache_dir=cache).setup("fit")
    caplog.clear()
    quora(tmp_path / "second", skip_unlabeled=True, use_cache=True, cache_dir=cache).setup("fit")
    assert "cache hit" in caplog.text
    assert f"{tmp_path / 'second' / 'train.csv'}: skipped 1 rows with an empty 'is_duplicate'" in caplog.text
    assert "first" not in caplog.text
