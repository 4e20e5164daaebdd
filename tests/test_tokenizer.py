from ptl_gpt2.tokenizer import EOT, EOT_ID, gpt2_tokenizer


def test_known_ids():
    enc = gpt2_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode(" Shall I compare thee to a summer's day?") == [
        38451, 314, 8996, 17903, 284, 257, 3931, 338, 1110, 30
    ]
    assert enc.encode(EOT, allowed_special="all") == [EOT_ID]
    assert enc.decode([15496, 995]) == "Hello world"


def test_cached_instance():
    assert gpt2_tokenizer() is gpt2_tokenizer()
