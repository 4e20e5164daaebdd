import pytest

from ptl_gpt2.model import GPT2Config


@pytest.mark.parametrize(
    "name, layers, heads, width",
    [("gpt2", 12, 12, 768), ("gpt2-medium", 24, 16, 1024), ("gpt2-large", 36, 20, 1280), ("gpt2-xl", 48, 25, 1600)],
)
def test_presets(name, layers, heads, width):
    config = GPT2Config.from_name(name)
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (layers, heads, width, 50257)
    assert config.mlp_width == 4 * width


def test_tiny_preset_has_the_real_vocabulary():
    assert GPT2Config.from_name("tiny").vocab_size == 50257


def test_overrides_and_errors():
    assert GPT2Config.from_name("tiny", attn_pdrop=0.0).attn_pdrop == 0.0
    with pytest.raises(ValueError, match="unknown GPT-2 preset 'gpt3'"):
        GPT2Config.from_name("gpt3")
    with pytest.raises(ValueError, match="not divisible"):
        GPT2Config(n_embd=10, n_head=3)


def test_hf_dict_round_trip():
    config = GPT2Config.from_name("tiny")
    hf = config.to_hf_dict()
    assert hf["model_type"] == "gpt2" and hf["activation_function"] == "gelu_new"
    assert GPT2Config.from_hf_dict(hf) == config
    with pytest.raises(ValueError, match="x/config.json: activation_function='relu'"):
        GPT2Config.from_hf_dict({**hf, "activation_function": "relu"}, source="x/config.json")
