"""`ptl-gpt2 generate` run in-process on a tiny checkpoint written to tmp_path."""

import re

import pytest
import torch

from ptl_gpt2.cli import main as cli_main
from ptl_gpt2.commands.generate import main
from ptl_gpt2.generation import generate_text
from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.model.checkpoint import CheckpointError
from ptl_gpt2.tokenizer import gpt2_tokenizer

PROMPTS_FILE = """Sonnets
a header line

7

From fairest creatures we desire increase,
That thereby beauty's rose might never die,

12

When I do count the clock that tells the time,
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT2(GPT2Config.from_name("tiny")).eval()
    directory = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(directory)
    return model, directory


def expected(model, prompts, **options):
    return generate_text(model, gpt2_tokenizer(), prompts, **options).texts


def test_prompt_prints_the_greedy_continuation(tiny, capsys):
    model, directory = tiny
    main(["--checkpoint", str(directory), "--prompt", "Shall I compare thee", "--prompt", "A\\nB", "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    texts = expected(model, ["Shall I compare thee", "A\nB"], max_new_tokens=6)
    assert out == f"--- 0\nShall I compare thee{texts[0]}\n--- 1\nA\nB{texts[1]}\n"


def test_sampling_options_reach_the_decoder(tiny, capsys):
    model, directory = tiny
    args = ["--checkpoint", str(directory), "--prompt", "The", "--max-new-tokens", "5", "--do-sample",
            "--top-k", "20", "--temperature", "0.8", "--seed", "3", "--best-of", "2", "--no-eos"]  # fmt: skip
    main(args)
    texts = expected(model, ["The"], max_new_tokens=5, do_sample=True, top_k=20, temperature=0.8, seed=3, best_of=2,
                     eos_token_id=None)  # fmt: skip
    assert capsys.readouterr().out == f"--- 0\nThe{texts[0]}\n"


def test_the_cli_dispatches_generate(tiny, capsys):
    _, directory = tiny
    cli_main(["generate", "--checkpoint", str(directory), "--prompt", "Hi", "--max-new-tokens", "2", "--num-beams", "2"])
    assert capsys.readouterr().out.startswith("--- 0\nHi")


def test_prompts_file_to_cs224n_sonnets_file(tiny, tmp_path, capsys):
    model, directory = tiny
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(PROMPTS_FILE)
    out_file = tmp_path / "generated_sonnets.txt"
    main(["--checkpoint", str(directory), "--prompts-file", str(prompts_file), "--max-new-tokens", "40",
          "--lines", "4", "--no-eos", "--sonnets-out", str(out_file)])  # fmt: skip
    assert "wrote 2 sonnets" in capsys.readouterr().out
    written = out_file.read_text()
    assert written.startswith("--Generated Sonnets--")
    # Blocks: a number-only line, then the sonnet; numbers are the prompt file's, in its order.
    blocks = re.split(r"^(\d+)$", written, flags=re.M)
    assert blocks[1::2] == ["7", "12"]
    prompts = ["From fairest creatures we desire increase,\nThat thereby beauty's rose might never die,\n",
               "When I do count the clock that tells the time,\n"]  # fmt: skip
    for body, prompt in zip(blocks[2::2], prompts):
        lines = [line for line in body.split("\n") if line.strip()]
        assert body.strip("\n").startswith(prompt.rstrip("\n"))
        assert len(lines) <= 4  # cut at --lines
    # The continuation is the decoder's own (stopping early on lines does not change the tokens).
    texts = expected(model, prompts, max_new_tokens=40, eos_token_id=None)
    first = [line for line in (prompts[1] + texts[1]).split("\n") if line.strip()][:4]
    assert [line for line in blocks[4].split("\n") if line.strip()] == first


def test_lightning_style_checkpoint_loads_the_backbone(tiny, tmp_path, capsys):
    model, directory = tiny
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"preset": "tiny"}, "state_dict": state}, ckpt)
    main(["--checkpoint", str(ckpt), "--prompt", "Hello", "--max-new-tokens", "4"])
    from_ckpt = capsys.readouterr().out
    main(["--checkpoint", str(directory), "--prompt", "Hello", "--max-new-tokens", "4"])
    assert from_ckpt == capsys.readouterr().out


def test_a_lora_checkpoint_generates_with_its_adapters_merged(tiny, tmp_path, capsys):
    import copy

    from ptl_gpt2.peft.lora import inject_lora, merge_lora

    model, _ = tiny
    lora = copy.deepcopy(model)
    inject_lora(lora, ["c_attn"], r=2, alpha=4)
    torch.nn.init.normal_(lora.transformer.h[0].attn.c_attn.lora_B)  # a trained-looking, non-zero update
    config = {"target_modules": ["c_attn"], "r": 2, "alpha": 4, "dropout": 0.0, "rslora": False, "dora": False, "qkv": "qkv"}
    ckpt = tmp_path / "lora.ckpt"
    torch.save({"hyper_parameters": {"preset": "tiny"}, "peft": {"method": "LoRA", "config": config},
                "state_dict": {f"model.{k}": v for k, v in lora.state_dict().items()}}, ckpt)
    main(["--checkpoint", str(ckpt), "--prompt", "Hello", "--max-new-tokens", "6"])
    merge_lora(lora)
    assert capsys.readouterr().out == f"--- 0\nHello{expected(lora, ['Hello'], max_new_tokens=6, seed=0)[0]}\n"


def test_unknown_weights_are_refused_with_a_clear_error(tiny, tmp_path):
    model, _ = tiny
    ckpt = tmp_path / "lora.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["model.transformer.h.0.attn.c_attn.lora_A.weight"] = torch.zeros(4, 64)  # adapters without their config
    torch.save({"hyper_parameters": {"preset": "tiny"}, "state_dict": state}, ckpt)
    with pytest.raises(CheckpointError, match="holds weights this backbone lacks"):
        main(["--checkpoint", str(ckpt), "--prompt", "Hello"])


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--checkpoint", "missing.ckpt", "--prompt", "x"], FileNotFoundError, "missing.ckpt does not exist"),
        (["--checkpoint", "{dir}", "--prompts-file", "nope.txt"], FileNotFoundError, "--prompts-file: nope.txt"),
    ],
)
def test_bad_arguments_raise_clear_errors(tiny, argv, error, message):
    _, directory = tiny
    with pytest.raises(error, match=re.escape(message)):
        main([a.replace("{dir}", str(directory)) for a in argv])


def test_a_refused_decoding_option_is_a_usage_error_before_the_model_loads(capsys):
    with pytest.raises(SystemExit) as exit_info:  # the checkpoint does not exist: it is never read
        main(["--checkpoint", "missing.ckpt", "--prompt", "x", "--do-sample", "--top-p", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith("ptl-gpt2 generate: error: top_p must be in (0, 1], got 2.0\n")


def test_prompt_or_prompts_file_is_required(tiny):
    _, directory = tiny
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(directory)])
