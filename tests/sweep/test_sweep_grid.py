"""Grid expansion: every combination, in order, once per seed, with stable run names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptl_gpt2.sweep import expand, load_grid
from ptl_gpt2.sweep.grid import task_name

ROOT = Path(__file__).resolve().parents[2]
LR = "model.init_args.optimizer.init_args.lr"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_product_of_axes_times_seeds_in_order(tmp_path):
    spec = load_grid(write(tmp_path, f"""
base: [configs/sst/quick.yaml]
seeds: [0, 1, 2]
fixed: {{trainer.max_steps: 5}}
grid:
  configs: [[], [configs/knobs/smart.yaml]]
  {LR}: [1.0e-3, 3.0e-3]
"""))
    runs = expand(spec)
    assert len(runs) == 2 * 2 * 3
    assert [r.index for r in runs] == list(range(12))
    # The last axis (then the seed) varies fastest.
    assert [(r.point["configs"], r.point["lr"], r.seed) for r in runs[:4]] == [
        ("base", "0.001", 0), ("base", "0.001", 1), ("base", "0.001", 2), ("base", "0.003", 0)]
    smart = runs[6]
    assert smart.configs == ["configs/sst/quick.yaml", "configs/knobs/smart.yaml"]
    assert smart.cli_args() == ["--config", "configs/sst/quick.yaml", "--config", "configs/knobs/smart.yaml",
                                "--trainer.max_steps=5", f"--{LR}=0.001", "--seed_everything=0"]
    assert len({r.name for r in runs}) == 12  # one folder per run


def test_flat_grid_cli_configs_and_seed_override(tmp_path):
    spec = load_grid(write(tmp_path, f"{LR}: [0.1, 0.2, 0.3]\n"))
    runs = expand(spec, configs=["configs/quora/quick.yaml"], seeds=[7])
    assert [r.overrides for r in runs] == [[(LR, 0.1)], [(LR, 0.2)], [(LR, 0.3)]]
    assert all(r.seed == 7 and r.configs == ["configs/quora/quick.yaml"] for r in runs)
    # No seeds anywhere: the config's own seed_everything is kept (no argument added).
    assert "--seed_everything" not in " ".join(expand(spec, configs=["x.yaml"])[0].cli_args())


def test_names_are_stable_and_depend_on_the_run_only(tmp_path):
    one = expand(load_grid(write(tmp_path, f"base: [a.yaml]\n{LR}: [0.1, 0.2]\n")))
    two = expand(load_grid(write(tmp_path, f"base: [a.yaml]\n{LR}: [0.05, 0.1, 0.2]\n")))
    # A value added to the grid shifts the indices but not the folders of the runs already there.
    assert [r.name for r in one] == [r.name for r in two[1:]]
    assert one[0].name.startswith("lr=0.1_")


def test_callback_values_are_json_on_the_command_line(tmp_path):
    spec = load_grid(write(tmp_path, """
base: [a.yaml]
grid:
  trainer.callbacks+: [{class_path: ptl_gpt2.peft.BitFit}, {class_path: ptl_gpt2.peft.LoRA, init_args: {r: 4}}]
"""))
    runs = expand(spec)
    assert runs[1].cli_args()[-1] == '--trainer.callbacks+={"class_path": "ptl_gpt2.peft.LoRA", "init_args": {"r": 4}}'
    assert [r.point["callbacks"] for r in runs] == ["BitFit", "LoRA"]


@pytest.mark.parametrize("text, message", [
    (f"{LR}: 0.1\n", "must be a non-empty list"),
    ("grid: {configs: [configs/knobs/smart.yaml]}\nbase: [a.yaml]\n", "lists of config files"),
    (f"seeds: 3\n{LR}: [1]\n", "'seeds' must be a list"),
])
def test_bad_grids_are_refused_by_name(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_grid(write(tmp_path, text))


def test_no_config_at_all_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no config"):
        expand(load_grid(write(tmp_path, f"{LR}: [1]\n")))


def test_shipped_lora_grid_is_4_by_4_on_the_sst_quick_recipe():
    runs = expand(load_grid(ROOT / "configs/sweeps/lora_grid.yaml"))
    assert len(runs) == 16
    assert {(r.point["r"], r.point["alpha"]) for r in runs} == {
        (str(r), str(a)) for r in (1, 16, 128, 256) for a in (1, 16, 128, 256)}
    args = runs[0].cli_args()
    # The callback is appended before its options are set (they apply to the last one appended).
    assert args.index("--trainer.callbacks+=ptl_gpt2.peft.LoRA") < args.index("--trainer.callbacks.r=1")
    assert task_name([str(ROOT / c) for c in runs[0].configs]) == "sst"
    assert task_name([str(ROOT / "configs/sst/quick.yaml"), str(ROOT / "configs/knobs/smart.yaml")]) == "sst"


def test_quick_tasks_grid_runs_every_classification_recipe_with_three_seeds():
    runs = expand(load_grid(ROOT / "configs/sweeps/quick_tasks.yaml"))
    assert len(runs) == 9
    assert sorted({task_name(r.configs) for r in runs}) == ["cfimdb", "quora", "sst"]
    assert sorted(r.seed for r in runs) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all((ROOT / c).is_file() for r in runs for c in r.configs)


def test_values_with_the_same_short_form_get_distinct_labels_and_stable_folders(tmp_path):
    # The report groups runs by label: two configs named quick.yaml, or two AdamW with different lr,
    # must not share one (they would be pooled as seeds of one row).
    spec = load_grid(write(tmp_path, """
grid:
  configs: [[configs/sst/quick.yaml], [experiments/sst/quick.yaml], [configs/sst/lora.yaml]]
  model.init_args.optimizer:
    - {class_path: ptl_gpt2.optim.AdamW, init_args: {lr: 0.001}}
    - {class_path: ptl_gpt2.optim.AdamW, init_args: {lr: 0.0001}}
    - {class_path: ptl_gpt2.optim.SOAP}
"""))
    runs = expand(spec)
    assert len({r.label for r in runs}) == 9
    assert runs[0].label == ('configs=configs/sst/quick.yaml optimizer='
                             '{"class_path":"ptl_gpt2.optim.AdamW","init_args":{"lr":0.001}}')
    assert runs[8].label == "configs=lora optimizer=SOAP"  # no clash: short
    # Folder names keep the short form (and a hash), so adding a clashing value later renames nothing.
    assert runs[0].name.startswith("configs=quick_optimizer=AdamW_")
    alone = expand(load_grid(write(tmp_path, "grid:\n  configs: [[configs/sst/quick.yaml]]\n")))
    assert alone[0].label == "configs=quick"
    assert alone[0].name == expand(load_grid(write(tmp_path, "grid:\n  configs: [[configs/sst/quick.yaml], [x/quick.yaml]]\n")))[0].name
