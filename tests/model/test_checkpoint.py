import json

import pytest
import torch
from safetensors.torch import save_file

from ptl_gpt2.model import GPT2, CheckpointError, GPT2Config
from ptl_gpt2.model.checkpoint import CONV1D_SUFFIXES, to_hf_state_dict


def hf_layout(model: GPT2, prefix: bool = True) -> dict[str, torch.Tensor]:
    """A state dict as Hugging Face writes it, built by hand: Conv1D (in, out) and mask buffers."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue
        if key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t().contiguous()
        state[key if prefix else key.removeprefix("transformer.")] = tensor.clone()
    for i in range(model.config.n_layer):
        state[f"{'transformer.' if prefix else ''}h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
        state[f"{'transformer.' if prefix else ''}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


def write_config(directory, config):
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict()))


def assert_same_outputs(a: GPT2, b: GPT2):
    x = torch.randint(0, 50257, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), atol=0, rtol=0)


def test_save_load_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = GPT2.from_pretrained(tmp_path)
    assert loaded.config == tiny_model.config
    assert_same_outputs(tiny_model, loaded)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_saved_file_uses_conv1d_layout(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("transformer.h.0.attn.c_attn.weight").shape == (64, 192)  # (in, out)
        assert "lm_head.weight" not in f.keys()


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_loads_hand_built_hf_state_dict(tiny_model, tmp_path, prefix, fmt):
    state = hf_layout(tiny_model, prefix)
    if fmt == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    else:
        torch.save(state, tmp_path / "pytorch_model.bin")
    write_config(tmp_path, tiny_model.config)
    assert_same_outputs(tiny_model, GPT2.from_pretrained(tmp_path))


def test_loads_a_weights_file_path_and_overrides_config(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    loaded = GPT2.from_pretrained(tmp_path / "model.safetensors", attn_pdrop=0.3)
    assert loaded.config.attn_pdrop == 0.3
    assert_same_outputs(tiny_model, loaded)


def test_bin_files_never_run_code(tmp_path, tiny_model):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin")
    write_config(tmp_path, tiny_model.config)
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a plain tensor checkpoint"):
        GPT2.from_pretrained(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such checkpoint"):
        GPT2.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors, pytorch_model.bin"):
        GPT2.from_pretrained(tmp_path)


def test_missing_config_is_explained(tiny_model, tmp_path):
    save_file(to_hf_state_dict(tiny_model), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="no config.json beside the weights"):
        GPT2.from_pretrained(tmp_path)


def test_hub_name_offline_says_how_to_pass_a_path(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(FileNotFoundError, match="huggingface_hub is not installed.*local directory"):
        GPT2.from_pretrained("gpt2")


def test_missing_and_unexpected_keys_are_named(tiny_model, tmp_path):
    state = hf_layout(tiny_model)
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.9.attn.c_attn.weight"] = torch.zeros(64, 192)
    save_file(state, str(tmp_path / "model.safetensors"))
    write_config(tmp_path, tiny_model.config)
    with pytest.raises(CheckpointError) as err:
        GPT2.from_pretrained(tmp_path)
    assert "missing transformer.h.1.mlp.c_fc.bias" in str(err.value)
    assert "unexpected transformer.h.9.attn.c_attn.weight" in str(err.value)


def test_shape_mismatch_names_key_and_shapes(tiny_model, tmp_path):
    state = hf_layout(tiny_model)
    state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(64, 128)
    save_file(state, str(tmp_path / "model.safetensors"))
    write_config(tmp_path, tiny_model.config)
    with pytest.raises(CheckpointError, match=r"transformer.h.0.mlp.c_fc.weight has shape \(128, 64\).*\(256, 64\)"):
        GPT2.from_pretrained(tmp_path)


def test_config_that_disagrees_with_the_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    write_config(tmp_path, GPT2Config.from_name("tiny", n_embd=128))
    with pytest.raises(CheckpointError, match="the config disagrees with the weights"):
        GPT2.from_pretrained(tmp_path)


def test_hugging_face_round_trip(tiny_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny_model.save_pretrained(tmp_path / "ours")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours")
    hf.save_pretrained(tmp_path / "theirs")  # and we load what Hugging Face writes
    assert_same_outputs(tiny_model, GPT2.from_pretrained(tmp_path / "theirs"))
