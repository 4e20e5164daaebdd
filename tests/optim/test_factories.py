"""Weight-decay groups from parameter names, and the AdamW that builds them."""

import pytest
import torch

from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.optim import SOAP, AdamW, param_groups


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT2(GPT2Config.from_name("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))


def decayed_names(groups):
    return {name for g in groups if g["weight_decay"] > 0 for name, _ in g["params"]}


def test_named_parameters_decay_matrices_only(model):
    groups = param_groups(model.named_parameters(), weight_decay=0.1)
    decayed = decayed_names(groups)
    assert decayed == {n for n, _ in model.named_parameters() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # the tied head counted once


def test_no_decay_patterns_are_configurable(model):
    groups = param_groups(model.named_parameters(), 0.1, no_decay=["bias", "ln_*", "wpe", "c_fc"])
    decayed = decayed_names(groups)
    assert "transformer.wte.weight" in decayed and "transformer.wpe.weight" not in decayed
    assert not any("c_fc" in n for n in decayed)
    assert "transformer.h.0.ln_1.weight" not in decayed  # 1-D: never decayed, whatever the patterns


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error(model):
    for n, p in model.named_parameters():
        p.requires_grad_("c_attn" in n)
    groups = param_groups(model.named_parameters(), 0.1)
    assert {n for g in groups for n, _ in g["params"]} == {n for n, p in model.named_parameters() if "c_attn" in n}
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        param_groups(model.named_parameters(), 0.1)


def test_plain_parameters_and_ready_groups():
    w, b = torch.zeros(3, 2, requires_grad=True), torch.zeros(3, requires_grad=True)
    groups = param_groups([w, b], 0.1)
    assert [(g["weight_decay"], len(g["params"])) for g in groups] == [(0.1, 1), (0.0, 1)]
    ready = [{"params": [w, b], "weight_decay": 0.5, "lr": 1.0}]
    assert param_groups(ready, 0.1) == [{"params": [w, b], "weight_decay": 0.5, "lr": 1.0}]
    with pytest.raises(TypeError, match="expected a tensor"):
        param_groups([("w", "not a tensor")], 0.1)


@pytest.mark.parametrize("cls", [AdamW, SOAP])
def test_optimizers_take_named_pairs_and_record_names(cls, model):
    opt = cls(list(model.named_parameters()), weight_decay=0.1)
    names = opt.state_dict()["param_groups"][0]["param_names"]
    assert "transformer.h.0.attn.c_attn.weight" in names
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_adamw_equals_torch_adamw_with_the_same_groups(model):
    torch.manual_seed(1)
    x = torch.randint(0, 1000, (2, 8))
    twin = GPT2(model.config)
    twin.load_state_dict(model.state_dict())
    start = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    ours = AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.1)
    twin_params = dict(twin.named_parameters())
    reference = torch.optim.AdamW(
        [{"params": [twin_params[n] for n in g["param_names"]], "weight_decay": g["weight_decay"]} for g in ours.param_groups],
        lr=1e-2,
        fused=True,  # the kernel ours picks on the CPU; fp32 rounding differs between kernels
    )
    for m, opt in ((model, ours), (twin, reference)):
        for _ in range(3):
            m(x).logsumexp(-1).mean().backward()
            opt.step()
            opt.zero_grad()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    assert not torch.allclose(model.transformer.h[0].attn.c_attn.weight, start)


def test_fused_adamw_allows_gradient_clipping_under_mixed_precision():
    # Lightning refuses to clip for optimizers that unscale inside step(); fused AdamW does by default.
    import lightning as L
    from torch.utils.data import DataLoader

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return AdamW(self.named_parameters(), lr=1e-2, fused=True)

    model = Tiny()
    before = model.layer.weight.detach().clone()
    trainer = L.Trainer(max_steps=2, precision="bf16-mixed", gradient_clip_val=0.5, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(torch.randn(8, 4), batch_size=4))
    assert not torch.equal(model.layer.weight, before)


def test_adamw_picks_the_fused_kernel_on_cpu_and_matches_foreach():
    torch.manual_seed(0)
    weights = [torch.randn(8, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    runs = {}
    for kind in ("default", "foreach"):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        named = [("w", params[0]), ("b", params[1])]
        opt = AdamW(named, lr=1e-2, foreach=True) if kind == "foreach" else AdamW(named, lr=1e-2)
        for step in range(3):
            for p in params:
                p.grad = torch.sin(p.detach() * (step + 1))
            opt.step()
        runs[kind] = (opt, params)
    assert all(g["fused"] for g in runs["default"][0].param_groups)
    assert not any(g["fused"] for g in runs["foreach"][0].param_groups)
    for fused_p, foreach_p in zip(runs["default"][1], runs["foreach"][1]):
        torch.testing.assert_close(fused_p, foreach_p, rtol=1e-12, atol=1e-12)
