import sys

import pytest

from ptl_gpt2.cli import entry


def test_a_missing_checkpoint_is_one_line_and_the_traceback_is_one_switch_away(monkeypatch, tmp_path):
    missing = tmp_path / "nope"
    monkeypatch.setattr(sys, "argv", ["ptl-gpt2", "generate", "--checkpoint", str(missing), "--prompt", "x"])
    monkeypatch.delenv("PTL_GPT2_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == f"ptl-gpt2: error: {missing}: no such checkpoint file or directory " \
        "(hub names: gpt2, gpt2-medium, gpt2-large, gpt2-xl, llama-tiny)"
    monkeypatch.setenv("PTL_GPT2_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        entry()
