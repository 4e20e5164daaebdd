from pathlib import Path

import pytest
import torch

from ptl_gpt2.model import GPT2, GPT2Config

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def tiny_config() -> GPT2Config:
    # No dropout, so train-mode and eval-mode outputs agree in equivalence tests.
    return GPT2Config.from_name("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)


@pytest.fixture
def tiny_model(tiny_config) -> GPT2:
    torch.manual_seed(0)
    return GPT2(tiny_config).eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA.resolve()
