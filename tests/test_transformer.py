"""slrpipe's Transformer layers against nn.TransformerEncoder, and the cheap CPU dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slrpipe.model.dropout import Dropout, dropout
from slrpipe.model.transformer import TransformerLayer, TransformerStack


@pytest.mark.parametrize("norm_first, activation", [(True, "relu"), (False, "gelu")])
def test_matches_torch_transformer_encoder(norm_first: bool, activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed -> same state dict (keys and values); same outputs with dropout off, padded
    tokens masked out of attention; gradients agree too. In training, our attention takes its
    written-out path (the one that drops attention weights); with the drop made the identity it
    must agree with torch's."""
    monkeypatch.setattr("slrpipe.model.transformer.dropout", lambda x, p: x)
    torch.manual_seed(3)
    reference = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 24, 0.1, activation=activation, batch_first=True,
                                                                 norm_first=norm_first), 2, enable_nested_tensor=False)
    torch.manual_seed(3)
    ours = TransformerStack(TransformerLayer(16, 4, 24, 0.1, activation=activation, norm_first=norm_first), 2)
    theirs_state, our_state = reference.state_dict(), ours.state_dict()
    assert list(theirs_state) == list(our_state)
    for key in theirs_state:
        assert torch.equal(theirs_state[key], our_state[key]), key

    x = torch.randn(3, 7, 16, dtype=torch.float64)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[0, 5:] = False
    valid[2, :2] = False
    reference.double(), ours.double()
    for train in (False, True):  # train mode with dropout 0: the path that draws masks when p > 0
        for module in (reference, ours):
            module.train(train)
            for sub in module.modules():
                if isinstance(sub, (nn.Dropout, Dropout)):
                    sub.p = 0.0
                if hasattr(sub, "dropout_p"):
                    sub.dropout_p = 0.5 if train else 0.0  # > 0: the written-out path
                if isinstance(sub, nn.MultiheadAttention):
                    sub.dropout = 0.0
        expected = reference(x, src_key_padding_mask=~valid)
        got = ours(x, valid)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    weights = torch.randn(3, 7, 16, dtype=torch.float64)
    (reference(x, src_key_padding_mask=~valid) * weights).sum().backward()
    (ours(x, valid) * weights).sum().backward()
    for (name, theirs), (_, mine) in zip(reference.named_parameters(), ours.named_parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_attention_dropout_in_training_keeps_padded_keys_out() -> None:
    """With attention dropout on, a padded key still gets no weight: changing its value leaves
    every output unchanged under the same random draws."""
    torch.manual_seed(0)
    layer = TransformerLayer(8, 2, 16, 0.5, activation="relu", norm_first=True).train()
    x = torch.randn(2, 5, 8)
    valid = torch.tensor([[True, True, True, False, False], [True] * 5])
    changed = x.clone()
    changed[0, 3:] += 100.0
    torch.manual_seed(1)
    first = layer(x, valid)
    torch.manual_seed(1)
    second = layer(changed, valid)
    torch.testing.assert_close(first[0, :3], second[0, :3])
    torch.testing.assert_close(first[1], second[1])


def test_dropout_rate_scale_and_gradient() -> None:
    torch.manual_seed(0)
    x = torch.full((400_000,), 2.0, requires_grad=True)
    y = dropout(x, 0.1)
    kept = y != 0
    # 400k Bernoulli(0.9) draws: the kept share is 0.9 within 5 standard deviations (0.0024).
    assert abs(kept.double().mean().item() - 0.9) < 0.0024
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.9)
    # The draws follow torch's generator: the same seed, the same mask.
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), 0.1) != 0, kept)


def test_dropout_edge_cases() -> None:
    x = torch.randn(5, 3, dtype=torch.bfloat16)
    assert dropout(x, 0.1, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x, 0.5).dtype == torch.bfloat16
    assert dropout(torch.randn(3), 0.5).shape == (3,)  # fewer elements than one 64-bit draw gives
    layer = Dropout(0.3).eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
