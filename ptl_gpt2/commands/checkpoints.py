"""The backbone of any checkpoint, for the commands that run a model outside a task (generate, retention)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import GPT2
from ..model.checkpoint import CheckpointError


def load_backbone(path: str | Path, base: str | None = None) -> GPT2:
    """The GPT-2 of a Lightning `.ckpt` (any task, LoRA merged, quantisation re-applied) or of a HF dir."""
    from ..peft.lora import inject_lora, merge_lora
    from ..quantization import fake_quantize_model, quantize_model
    from ..tasks.base import build_backbone

    path = Path(path)
    if path.suffix != ".ckpt":
        return GPT2.from_pretrained(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint: {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {})
    pretrained = base or hp.get("pretrained")
    model = build_backbone(hp.get("preset", "gpt2"), pretrained, hp.get("dropout"), False)
    peft, quant = ckpt.get("peft") or {}, ckpt.get("quantization") or {}
    if peft.get("method") == "LoRA":
        c = peft["config"]
        inject_lora(model, c["target_modules"], c["r"], c["alpha"], c["dropout"], c["rslora"], c["dora"], c["qkv"])
    elif peft and peft.get("method") not in ("BitFit", "FreezeFirstK"):
        raise CheckpointError(f"--checkpoint: {path} holds {peft.get('method')} modules; only full, LoRA, BitFit "
                              "and quantised checkpoints rebuild into a plain backbone")
    if quant:
        c = quant["config"]
        if quant["method"] == "QAFT":
            fake_quantize_model(model, c["dtype"], c["group_size"], c["targets"], c["embeddings"], c.get("activation_bits"))
        else:
            quantize_model(model, c["dtype"], c["group_size"], c["targets"], c["embeddings"])
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"--checkpoint: {path} holds weights this backbone lacks: {result.unexpected_keys[:3]}")
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing and pretrained is None:
        raise CheckpointError(f"--checkpoint: {path} lacks backbone weights ({', '.join(missing[:3])}, ...) and names "
                              "no model.pretrained to take them from; pass --base")
    if peft.get("method") == "LoRA":
        merge_lora(model)
    return model.eval()
