"""Spec tests for the cross-entropy baseline (shared/specs/baselines.md §2–3): MSP and MLS scores,
prediction, label smoothing and the matched-recipe head. Expected values are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from methods.base import DataInfo
from methods.softmax import LinearHeadNet, Softmax, SoftmaxConfig, mls_score, msp_score

# logits row 0 = [1, 2, 3], row 1 = [0.5, −1, 0.2]
LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.2]])
# MSP by hand: e³/(e¹+e²+e³) = 0.665241;  e^0.5/(e^0.5+e^−1+e^0.2) = 0.509178
P0 = math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))
P1 = math.exp(0.5) / (math.exp(0.5) + math.exp(-1) + math.exp(0.2))


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def softmax_with_logits(logits: torch.Tensor, **cfg) -> Softmax:
    method = Softmax(SoftmaxConfig(**cfg), DataInfo(channels=1, image_size=8, num_known=logits.shape[1]))
    method.model = FixedLogits(logits)
    return method


def dummy_x(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 8, 8)


def test_hand_probabilities():
    assert P0 == pytest.approx(0.665241, abs=1e-6)
    assert P1 == pytest.approx(0.509178, abs=1e-6)


def test_msp_score_hand_values():
    np.testing.assert_allclose(msp_score(LOGITS).numpy(), [-0.665241, -0.509178], atol=1e-6)


def test_mls_score_hand_values():
    np.testing.assert_allclose(mls_score(LOGITS).numpy(), [-3.0, -0.5])


def test_scores_direction_higher_is_more_unknown():
    # row 1 is the less confident one under both scores
    assert msp_score(LOGITS)[1] > msp_score(LOGITS)[0]
    assert mls_score(LOGITS)[1] > mls_score(LOGITS)[0]
    # MLS sees the logit scale, MSP does not: shifting all logits by +10 keeps MSP, lowers MLS by 10
    np.testing.assert_allclose(msp_score(LOGITS + 10).numpy(), [-P0, -P1], atol=1e-6)
    np.testing.assert_allclose(mls_score(LOGITS + 10).numpy(), [-13.0, -10.5])


def test_evaluate_pred_and_scores():
    out = softmax_with_logits(LOGITS).evaluate([dummy_x(2)])
    assert out["pred"].tolist() == [2, 0]  # argmax of the logits
    np.testing.assert_allclose(out["score_mls"], [-3.0, -0.5])
    np.testing.assert_allclose(out["score_msp"], [-P0, -P1], atol=1e-6)
    np.testing.assert_allclose(out["score"], out["score_mls"])  # primary score = MLS (baselines.md §4)


# cross-entropy by hand for logits [1,2,3]: log-sum-exp = ln(e+e²+e³) = 3.407606
#   −log p = [2.407606, 1.407606, 0.407606]
#   y = 0, ε = 0: 2.407606
#   y = 0, ε = 0.1, K = 3: q = [0.9 + 0.1/3, 0.1/3, 0.1/3] → 0.933333·2.407606 + 0.033333·(1.407606 + 0.407606)
#                                                           = 2.247099 + 0.060507 = 2.307606
#   y = 2, ε = 0.1: 0.933333·0.407606 + 0.033333·(2.407606 + 1.407606) = 0.380432 + 0.127174 = 0.507606
LSE = math.log(math.exp(1) + math.exp(2) + math.exp(3))
NLL = [LSE - 1, LSE - 2, LSE - 3]


def test_cross_entropy_loss_hand_value_no_smoothing():
    method = softmax_with_logits(LOGITS[:1])
    assert LSE == pytest.approx(3.407606, abs=1e-6)
    assert method.loss(dummy_x(1), torch.tensor([0])).item() == pytest.approx(2.407606, abs=1e-5)


def test_label_smoothing_reaches_cross_entropy():
    method = softmax_with_logits(LOGITS[:1], label_smoothing=0.1)
    expected = (0.9 + 0.1 / 3) * NLL[0] + (0.1 / 3) * (NLL[1] + NLL[2])
    assert expected == pytest.approx(2.307606, abs=1e-6)
    assert method.loss(dummy_x(1), torch.tensor([0])).item() == pytest.approx(expected, abs=1e-5)


def test_loss_is_batch_mean_with_smoothing():
    logits = torch.cat([LOGITS[:1], LOGITS[:1]])
    method = softmax_with_logits(logits, label_smoothing=0.1)
    # mean of 2.307606 (y=0) and 0.507606 (y=2) = 1.407606
    assert method.loss(dummy_x(2), torch.tensor([0, 2])).item() == pytest.approx(1.407606, abs=1e-5)


def test_label_smoothing_config_bounds():
    assert SoftmaxConfig().label_smoothing == 0.0
    assert SoftmaxConfig.from_dict({"label_smoothing": 0.9}).label_smoothing == 0.9  # Vaze TinyImageNet
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            SoftmaxConfig(label_smoothing=bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxConfig.from_dict({"smoothing": 0.1})  # unknown key; message lists the valid ones


def test_matched_head_is_gap_then_bias_free_linear():
    torch.manual_seed(0)
    method = Softmax(SoftmaxConfig(), DataInfo(channels=1, image_size=8, num_known=4))
    net = method.model
    assert isinstance(net, LinearHeadNet)
    assert net.fc.bias is None
    assert (net.fc.in_features, net.fc.out_features) == (128, 4)
    net.eval()
    x = torch.randn(3, 1, 8, 8)
    logits = net(x)
    assert tuple(logits.shape) == (3, 4)
    # logits = W · GAP(feature map), computed here by an explicit mean over the spatial positions
    fmap = net.backbone(x)
    gap = fmap.sum(dim=(2, 3)) / (fmap.shape[2] * fmap.shape[3])
    torch.testing.assert_close(logits, gap @ net.fc.weight.T, rtol=1e-5, atol=1e-6)
