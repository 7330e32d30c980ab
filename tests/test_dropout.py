"""CPU dropout with PCG64 masks: the same law as F.dropout, reproducible from torch's seed, and an
attention that equals PyTorch's where no random draw is involved."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.backbones.dropout import Dropout, attention, dropout, keep_mask


def test_a_mask_keeps_each_element_with_probability_one_minus_p_and_rescales_it():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    # 400k Bernoulli(0.9) draws: the kept share is within 5 standard errors of 0.9.
    assert abs(kept.float().mean().item() - 0.9) < 5 * math.sqrt(0.9 * 0.1 / 400_000)
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased, as F.dropout


def test_masks_follow_torch_manual_seed_and_differ_between_calls():
    torch.manual_seed(7)
    a, b = dropout(torch.ones(1000), 0.5, True), dropout(torch.ones(1000), 0.5, True)
    torch.manual_seed(7)
    assert torch.equal(dropout(torch.ones(1000), 0.5, True), a)
    assert not torch.equal(a, b)


def test_outside_training_or_at_p_zero_it_is_the_identity_and_the_module_rejects_bad_p():
    x = torch.randn(5, 3)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    module = Dropout(0.3).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_gradient_flows_through_the_kept_elements_only():
    torch.manual_seed(3)
    x = torch.randn(64, 8, requires_grad=True)
    y = dropout(x, 0.25, True)
    y.sum().backward()
    assert torch.equal(x.grad, (y.detach() != 0).float() / 0.75)


def _dense_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(dh) + mask) v, written out in fp64."""
    s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask.double()
    return torch.softmax(s, -1) @ v.double()


def test_attention_without_dropout_is_sdpa_and_the_plain_formula():
    torch.manual_seed(1)
    q, k, v = (torch.randn(4, 2, 6, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    mask[:, :, :, 4:] = float("-inf")
    mask[:, :, :, 0] = 1.0  # FlexCare's additive +1
    out = attention(q, k, v, mask, 0.0)
    assert torch.allclose(out, _dense_attention(q, k, v, mask), atol=1e-12)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)


def test_attention_dropout_drops_probabilities_not_values():
    """With dropout, each output row is the masked, rescaled attention row times v; so at p -> 0 of
    a mask that keeps everything it is the plain formula, and the row sums of the weights are
    1 / (1 - p) times the kept share of the probabilities."""
    torch.manual_seed(2)
    q, k = torch.randn(2, 1, 5, 4), torch.randn(2, 1, 5, 4)
    v = torch.eye(5).expand(2, 1, 5, 5)  # the output is the weight matrix itself
    mask = torch.zeros(2, 1, 5, 5)
    weights = attention(q, k, v, mask, 0.4)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
    kept = weights != 0
    assert torch.allclose(weights[kept], probs[kept] / 0.6, atol=1e-6)
    assert 0 < kept.float().mean() < 1


@pytest.mark.parametrize("p", [0.1, 0.25, 1 / 3, 0.5, 0.9, 1e-9, 1 - 1e-9])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4097])
def test_masks_are_numpys_float32_pcg64_draws_compared_with_p(p, n):
    """The law as documented: element i kept where Generator(PCG64(seed)).random(n, float32)[i] >= p,
    the seed one 63-bit draw of torch's CPU generator; the kept elements scaled by 1 / (1 - p)."""
    torch.manual_seed(n)
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
    draws = np.random.Generator(np.random.PCG64(seed)).random(n, dtype=np.float32)
    expected = torch.from_numpy(np.where(draws >= p, np.float32(1.0 / (1.0 - p)), np.float32(0.0)))
    torch.manual_seed(n)
    assert torch.equal(keep_mask(torch.Size([n]), p, torch.float32), expected)
