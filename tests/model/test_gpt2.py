import pytest
import torch

from ptl_gpt2.model import GPT2, GPT2Config

ATOL = 1e-5


def ids(*shape, seed=1):
    return torch.randint(0, 50257, shape, generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_tied_head(tiny_model):
    x = ids(2, 7)
    assert tiny_model(x).shape == (2, 7, 50257)
    assert tiny_model.lm_head.weight is tiny_model.transformer.wte.weight
    assert tiny_model.transformer(x).shape == (2, 7, tiny_model.config.n_embd)


def test_parameter_count_of_gpt2_small():
    with torch.device("meta"):
        model = GPT2(GPT2Config.from_name("gpt2"))
    assert model.num_parameters() == 124_439_808  # the published count (tied head counted once)


def test_causality(tiny_model):
    x = ids(1, 12)
    y = x.clone()
    y[0, 8:] = ids(1, 4, seed=2)
    with torch.no_grad():
        a, b = tiny_model(x), tiny_model(y)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=ATOL, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_inputs_embeds_equal_ids(tiny_model):
    x = ids(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(x), tiny_model(inputs_embeds=tiny_model.transformer.wte(x)))
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model()


def test_kv_cache_prefill_then_steps_equals_full_forward(tiny_model):
    x = ids(2, 10)
    with torch.no_grad():
        full = tiny_model(x)
        cache = tiny_model.new_kv_cache()
        steps = [tiny_model(x[:, :6], kv_cache=cache)]
        steps += [tiny_model(x[:, t : t + 1], kv_cache=cache) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)
    assert cache.seq_len == 10


def test_kv_cache_multi_token_chunks(tiny_model):
    x = ids(1, 9)
    with torch.no_grad():
        full = tiny_model(x)
        cache = tiny_model.new_kv_cache()
        chunks = [tiny_model(x[:, a:b], kv_cache=cache) for a, b in [(0, 4), (4, 7), (7, 9)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=ATOL, rtol=0)


def test_right_padding_matches_unpadded(tiny_model):
    short, long = ids(1, 5, seed=3), ids(1, 9, seed=4)
    pad = torch.full((1, 4), 50256)
    batch = torch.cat([torch.cat([short, pad], 1), long])
    mask = torch.tensor([[1] * 5 + [0] * 4, [1] * 9])
    with torch.no_grad():
        out = tiny_model(batch, mask)
        torch.testing.assert_close(out[0, :5], tiny_model(short)[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(out[1], tiny_model(long)[0], atol=ATOL, rtol=0)
    assert torch.isfinite(out).all()


def test_left_padding_with_cache_matches_unpadded(tiny_model):
    """Batched generation: left-padded prompts, then one token at a time through the cache."""
    short, long = ids(1, 4, seed=5), ids(1, 7, seed=6)
    nxt = ids(2, 3, seed=7)
    batch = torch.cat([torch.cat([torch.full((1, 3), 50256), short], 1), long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        cache = tiny_model.new_kv_cache()
        outs = [tiny_model(batch, mask, kv_cache=cache)[:, -1:]]
        for t in range(3):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
            outs.append(tiny_model(nxt[:, t : t + 1], mask, kv_cache=cache))
        batched = torch.cat(outs, 1)
        ref_short = tiny_model(torch.cat([short, nxt[:1]], 1))[:, 3:]
        ref_long = tiny_model(torch.cat([long, nxt[1:]], 1))[:, 6:]
    torch.testing.assert_close(batched[0], ref_short[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(batched[1], ref_long[0], atol=ATOL, rtol=0)


def test_bad_mask_and_too_long_inputs(tiny_model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\), expected \(1, 4\)"):
        tiny_model(ids(1, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match="exceeds n_positions=256"):
        tiny_model(ids(1, 257))


def test_activation_checkpointing_gives_the_same_gradients(tiny_config):
    torch.manual_seed(0)
    plain = GPT2(tiny_config).train()
    ckpt = GPT2(GPT2Config(**{**vars(tiny_config), "activation_checkpointing": True})).train()
    ckpt.load_state_dict(plain.state_dict())
    x = ids(2, 8)
    for model in (plain, ckpt):
        model(x).logsumexp(-1).mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = GPT2(GPT2Config.from_name("tiny", embd_pdrop=0.5))
    x = ids(1, 5)
    assert not torch.equal(model.train()(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_matches_hugging_face_gpt2(tiny_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny_model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = ids(2, 9)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(x), hf(x).logits, atol=1e-5, rtol=1e-5)
        ours, theirs = tiny_model(x, mask), hf(x, attention_mask=mask).logits
    torch.testing.assert_close(ours[1, :6], theirs[1, :6], atol=1e-5, rtol=1e-5)


def _right_padded(B: int = 3, T: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = ids(B, T)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # shorter rows, right-padded
    mask[2, 2:] = 0
    return x, mask, mask.sum(1) - 1


@pytest.mark.parametrize("padded", [False, True], ids=["no padding", "right padding"])
@pytest.mark.parametrize("options", [{}, {"activation_checkpointing": True}, {"position_embedding": "rope", "norm": "rmsnorm"}])
def test_output_positions_equal_the_full_forward_at_those_positions(padded, options):
    torch.manual_seed(0)
    no_dropout = {"embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0}
    # train mode (activation checkpointing works in training only), float64: the two paths round differently
    model = GPT2(GPT2Config.from_name("tiny", **options, **no_dropout)).double().train()
    x, mask, last = _right_padded()
    if not padded:
        mask, last = None, torch.tensor([8, 4, 0])  # any position, not only the last
    full = model.transformer(x, mask)  # (B, T, C)
    picked = full[torch.arange(3), last]
    pruned = model.transformer(x, mask, output_positions=last)  # (B, C)
    torch.testing.assert_close(pruned, picked, atol=ATOL, rtol=1e-5)
    grads = []
    for out in (picked, pruned):
        model.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for (name, _), a, b in zip(model.named_parameters(), *grads):
        torch.testing.assert_close(b, a, msg=name)


def test_output_positions_with_a_cached_prefix_equal_the_full_forward():
    torch.manual_seed(0)
    model = GPT2(GPT2Config.from_name("tiny")).eval()
    x, mask, last = _right_padded()
    with torch.no_grad():
        expected = []
        for pruned in (False, True):
            cache = model.new_kv_cache()
            model.transformer(x[:, :3], kv_cache=cache)  # 3 tokens already cached
            out = model.transformer(x[:, 3:], kv_cache=cache, output_positions=last.clamp(max=5) if pruned else None)
            expected.append(out if pruned else out[torch.arange(3), last.clamp(max=5)])
    torch.testing.assert_close(expected[1], expected[0], atol=ATOL, rtol=1e-5)


def test_output_positions_skip_the_last_blocks_mlp_elsewhere(tiny_model):
    rows = []
    hook = tiny_model.transformer.h[-1].mlp.c_fc.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1]))
    try:
        tiny_model.transformer(ids(3, 9), output_positions=torch.tensor([8, 4, 0]))
    finally:
        hook.remove()
    assert rows == [(3, 1)]


def test_training_forward_with_dropout_traces_without_graph_breaks(tiny_config):
    # The CPU dropout masks (ops.dropout) use an in-place random_ that Dynamo cannot capture; under
    # torch.compile they must step aside, or every dropout would split the compiled graph.
    import dataclasses

    model = GPT2(dataclasses.replace(tiny_config, embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1)).train()
    explained = torch._dynamo.explain(lambda x: model.transformer(x).sum())(ids(2, 9))
    assert explained.graph_break_count == 0, explained.break_reasons
