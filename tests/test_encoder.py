"""The sign encoder (METHOD.md section 5): output shapes, masking, and the parameter counts of the
configured sizes against the authors' model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slrpipe.config import load_params
from slrpipe.model.encoder import AttentionPool, SignEncoder
from slrpipe.pretrain.model import Branch

REPO = Path(__file__).resolve().parents[1]
SIZES = load_params(REPO / "params.yaml").model.sizes
JOINTS = {"right_hand": 21, "left_hand": 21, "trunk": 7}
AUTHORS_PARAMETERS = 50.25e6  # per encoder with its MLP heads (METHOD.md section 5)


def random_view(batch: int, frames: int, seed: int = 0) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    coords = {part: torch.rand(batch, frames, v, 2, generator=generator) for part, v in JOINTS.items()}
    masks = {part: torch.ones(batch, frames, v, dtype=torch.bool) for part, v in JOINTS.items()}
    return coords, masks


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("size", ["small", "paper"])
@pytest.mark.parametrize("parts", [("hand", "trunk"), ("hand",), ("trunk",)])
def test_features_have_the_width_of_the_size_for_each_built_part(size, parts):
    torch.manual_seed(0)
    encoder = SignEncoder(SIZES[size], parts).eval()
    coords, masks = random_view(batch=3, frames=8)
    features = encoder(coords, masks)
    assert list(features) == list(parts)
    assert all(f.shape == (3, SIZES[size].width) and torch.isfinite(f).all() for f in features.values())


def test_parameter_counts_of_the_sizes():
    """paper: 49.06 M per encoder with its heads, within 10 % of the authors' 50.25 M (of which
    1.58 M sit in layers their forward pass never uses); small: about 2 M, for CPU runs."""
    paper = count(Branch(SIZES["paper"], ("hand", "trunk"), global_head=False))
    assert round(paper / 1e6, 2) == 49.06
    assert abs(paper - AUTHORS_PARAMETERS) / AUTHORS_PARAMETERS < 0.10
    assert round(count(Branch(SIZES["small"], ("hand", "trunk"), global_head=False)) / 1e6, 2) == 2.05
    # Leaving a part out removes its GCN, Transformer, pool and head.
    assert count(SignEncoder(SIZES["small"], ("hand",))) + count(SignEncoder(SIZES["small"], ("trunk",))) == \
        count(SignEncoder(SIZES["small"]))


def test_masked_tokens_do_not_reach_the_pooled_feature():
    torch.manual_seed(0)
    pool = AttentionPool(4)
    tokens = torch.randn(2, 5, 4)
    valid = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    changed = tokens.clone()
    changed[~valid] = 100.0
    torch.testing.assert_close(pool(tokens, valid), pool(changed, valid))
    # The second sample has one valid token: its feature is that token.
    torch.testing.assert_close(pool(tokens, valid)[1], tokens[1, 0])


def test_a_sample_without_any_hand_or_trunk_still_gets_finite_features():
    """A clip whose hands are never found would give the pool nothing to attend to (NaN):
    the encoder falls back to all tokens."""
    torch.manual_seed(0)
    encoder = SignEncoder(SIZES["small"]).eval()
    coords, masks = random_view(batch=2, frames=6)
    for part in JOINTS:
        masks[part][0] = False
    features = encoder(coords, masks)
    assert all(torch.isfinite(f).all() for f in features.values())


def test_a_samples_features_do_not_depend_on_the_rest_of_the_batch():
    """In eval mode, masks and padding stay within their sample: the same clip gives the same
    feature alone and beside others whose hands are missing in some frames."""
    torch.manual_seed(0)
    encoder = SignEncoder(SIZES["small"]).eval()
    coords, masks = random_view(batch=3, frames=6)
    masks["left_hand"][1, :3] = False
    masks["right_hand"][2] = False
    together = encoder(coords, masks)
    alone = encoder({p: c[:1] for p, c in coords.items()}, {p: m[:1] for p, m in masks.items()})
    for part in ("hand", "trunk"):
        torch.testing.assert_close(together[part][:1], alone[part], rtol=1e-4, atol=1e-5)


def test_frames_without_a_hand_are_masked_in_the_hand_pool():
    """The hand pool attends only to the tokens of frames where that hand was found, each hand
    on its own."""
    torch.manual_seed(0)
    encoder = SignEncoder(SIZES["small"], ("hand",)).eval()
    coords, masks = random_view(batch=1, frames=6)
    masks["right_hand"][0, 2:] = False
    masks["left_hand"][0, :] = False
    tokens = {}

    def keep(module, inputs, output):
        tokens["pool"] = inputs

    encoder.hand_pool.register_forward_hook(keep)
    encoder(coords, masks)
    _, valid = tokens["pool"]
    # Right-hand tokens of frames 0-1 only (tokens alternate right, left per frame).
    assert valid[0].tolist() == [True, False, True, False] + [False] * 8
