"""`ptl-gpt2 export-adapter`: write a LoRA checkpoint as a Hugging Face PEFT adapter directory.

    ptl-gpt2 export-adapter --checkpoint runs/sst-lora/.../last.ckpt --out adapters/sst-lora
    # then, with transformers + peft:
    #   PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("gpt2"), "adapters/sst-lora")

The checkpoint must come from a run with the `LoRA` callback (adapter-only or full). The backbone
is rebuilt from the checkpoint's `preset`/`pretrained` (or `--base-model`), the adapters are loaded
into it and written with PEFT's key names. Trained weights outside the backbone (a task head) are
not part of a PEFT LoRA adapter; they go to `task_weights.safetensors` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.checkpoint import CheckpointError


def export_checkpoint(checkpoint: str | Path, out: str | Path, base_model: str | None = None) -> Path:
    from ..peft.hf_peft import export_adapter
    from ..peft.lora import inject_lora, lora_modules
    from ..tasks.base import build_backbone

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint: {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    peft = ckpt.get("peft")
    if not peft or peft.get("method") != "LoRA":
        found = "no PEFT callback" if not peft else peft.get("method")
        raise CheckpointError(f"--checkpoint: {path} was saved by a run with {found}; export needs a LoRA run")
    cfg, hp = peft["config"], ckpt.get("hyper_parameters", {})
    pretrained = base_model or hp.get("pretrained")
    backbone = build_backbone(hp.get("preset", "gpt2"), pretrained, hp.get("dropout"), False)
    inject_lora(backbone, cfg["target_modules"], cfg["r"], cfg["alpha"], cfg["dropout"], cfg["rslora"],
                cfg["dora"], cfg["qkv"])
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    lora_keys = {f"{n}.{p}" for n, m in lora_modules(backbone).items() for p, _ in m.named_parameters() if "lora_" in p}
    if lora_keys & set(missing) or unexpected:
        raise CheckpointError(
            f"--checkpoint: {path} does not match its own LoRA config {cfg}: missing "
            f"{sorted(lora_keys & set(missing))[:3]}, unexpected {unexpected[:3]}"
        )
    backbone_saved = [m.removeprefix("model.") for m in cfg.get("modules_to_save", []) if m.startswith("model.")]
    out = export_adapter(backbone, out, bias=cfg["bias"], modules_to_save=backbone_saved,
                         base_model_name_or_path=pretrained)
    task = {k: v.contiguous() for k, v in ckpt["state_dict"].items() if not k.startswith("model.")}
    if task:
        save_file(task, str(Path(out) / "task_weights.safetensors"), metadata={"format": "pt"})
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ptl-gpt2 export-adapter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a Lightning .ckpt from a run with the LoRA callback")
    parser.add_argument("--out", required=True, help="directory to write adapter_config.json + adapter_model.safetensors")
    parser.add_argument("--base-model", help="Hugging Face GPT-2 dir to rebuild the backbone from "
                                             "(default: the checkpoint's model.pretrained)")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out, args.base_model)
    print(f"wrote {out / 'adapter_config.json'} and {out / 'adapter_model.safetensors'}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
