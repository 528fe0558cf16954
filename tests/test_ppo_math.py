"""PPO and distillation math against hand-computed values, and one step against recorded TRL 0.11.4."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tnd_core.divergence import kd_divergence
from tnd_core.trainers.ppo_trainer.batch import batch_from_lists
from tnd_core.trainers.ppo_trainer.early_stopping import EarlyStopping
from tnd_core.trainers.ppo_trainer.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from tnd_core.trainers.ppo_trainer.losses import (
    clm_loss,
    compute_advantages,
    compute_rewards,
    kd_loss,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    response_mask,
    value_loss,
)
from tnd_core.trainers.ppo_trainer.score_processing import RunningMoments, ScoreProcessor, shape_scores

T = torch.tensor


def close(a, b, tol=1e-6):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=0
    )


# ---------------------------------------------------------------------- masks
def test_response_mask_stops_after_first_eos():
    responses = T([[5, 1, 7, 1], [5, 6, 7, 8], [1, 0, 0, 0]])
    assert response_mask(responses, eos_token_id=1).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_response_mask_respects_valid_and_pad_equal_to_eos():
    # pad == eos == 1: the first EOS counts, the padding after it does not, a short row's padding never counts.
    responses = T([[5, 1, 1, 1], [5, 6, 1, 1]])
    valid = T([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert response_mask(responses, 1, valid).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]


def test_batch_layout_left_pads_queries_and_right_pads_responses():
    batch = batch_from_lists(
        [T([4, 5, 6]), T([7])], [T([8, 1]), T([9, 10, 11])], pad_id=0, eos_token_id=1, device="cpu"
    )
    assert batch.input_ids.tolist() == [[4, 5, 6, 8, 1, 0], [0, 0, 7, 9, 10, 11]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert batch.mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.query_len == 3


def test_left_padding_does_not_change_the_logprobs():
    from transformers import GPT2Config, GPT2LMHeadModel

    from tnd_core.models import StudentModel

    torch.manual_seed(0)
    student = StudentModel(
        GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    ).eval()
    queries, responses = [T([4, 5, 6, 7]), T([8])], [T([9, 10]), T([11, 12])]
    batch = batch_from_lists(queries, responses, pad_id=0, eos_token_id=None, device="cpu")
    logits, values = student(
        batch.input_ids, batch.attention_mask, batch.position_ids, logits_to_keep=batch.response_len + 1
    )
    for i in range(2):
        alone = batch_from_lists([queries[i]], [responses[i]], pad_id=0, eos_token_id=None, device="cpu")
        a_logits, a_values = student(
            alone.input_ids, alone.attention_mask, alone.position_ids, logits_to_keep=alone.response_len + 1
        )
        assert close(logits[i], a_logits[0], 1e-5) and close(values[i], a_values[0], 1e-5)


# ---------------------------------------------------------------------- masked statistics
def test_masked_mean_var_whiten():
    x, m = T([1.0, 2.0, 3.0, 100.0]), T([1.0, 1.0, 1.0, 0.0])
    assert close(masked_mean(x, m), 2.0)
    assert close(masked_var(x, m), 1.0)  # unbiased: ((1 + 0 + 1) / 3) * 3 / 2
    assert close(masked_whiten(x, m)[:3], [-1.0, 0.0, 1.0], 1e-4)
    assert close(masked_whiten(x, m, shift_mean=False)[:3], [1.0, 2.0, 3.0], 1e-4)


# ---------------------------------------------------------------------- score processing
def test_running_moments_match_numpy():
    running = RunningMoments()
    a, b = [1.0, 2.0, 3.0], [10.0, 20.0]
    running.update(T(a))
    batch_mean, batch_std = running.update(T(b))
    assert batch_mean == pytest.approx(15.0) and batch_std == pytest.approx(np.std(b, ddof=1))
    assert running.mean == pytest.approx(np.mean(a + b))
    assert running.std == pytest.approx(np.std(a + b, ddof=1))


def test_score_scaling_then_norm_then_clip_in_that_order():
    # First batch [10, 20, 30]: running mean 20, running (unbiased) std 10.
    assert close(ScoreProcessor(True, False, None)(T([10.0, 20.0, 30.0])), [1.0, 2.0, 3.0], 1e-5)
    assert close(ScoreProcessor(True, True, None)(T([10.0, 20.0, 30.0])), [-1.0, 0.0, 1.0], 1e-5)
    # Clipping comes last: scaled to [1, 2, 3] first, then clipped at 2.5 (clipping first would give 2.5 everywhere).
    assert close(ScoreProcessor(True, False, 2.5)(T([10.0, 20.0, 30.0])), [1.0, 2.0, 2.5], 1e-5)
    assert close(ScoreProcessor(False, False, 2.5)(T([-10.0, 1.0, 30.0])), [-2.5, 1.0, 2.5])


def test_score_processor_state_round_trip():
    p = ScoreProcessor(True, True, None)
    p(T([1.0, 5.0, 9.0]))
    q = ScoreProcessor(True, True, None)
    q.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert close(p(T([4.0, 6.0])), q(T([4.0, 6.0])))


@pytest.mark.parametrize(
    "mode, baseline, expected",
    [
        ("none", 2.0, [1.0, 2.0, 4.0]),
        ("sub", 2.0, [-1.0, 0.0, 2.0]),
        ("div", 2.0, [0.5, 1.0, 2.0]),
        ("bin", 2.0, [-1.0, 2.0, 4.0]),
    ],
)
def test_reward_shaping(mode, baseline, expected):
    assert close(shape_scores(T([1.0, 2.0, 4.0]), mode, baseline), expected)


# ---------------------------------------------------------------------- KL penalty and rewards
@pytest.mark.parametrize("kind, expected", [("kl", [0.5, -1.0]), ("abs", [0.5, 1.0]), ("mse", [0.125, 0.5])])
def test_kl_penalty_estimators(kind, expected):
    assert close(kl_penalty(T([-1.0, -2.0]), T([-1.5, -1.0]), kind), expected)


def test_kl_penalty_full_is_kl_policy_to_reference():
    policy, ref = T([[0.5, 0.5]]).log(), T([[0.25, 0.75]]).log()
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert close(kl_penalty(None, None, "full", policy, ref), [expected])


def test_rewards_put_the_score_on_the_last_response_token():
    kls = T([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, non_score = compute_rewards(T([1.0, 2.0]), kls * mask, mask, kl_coef=0.5)
    assert close(rewards, [[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0]])
    assert close(non_score, [[-0.05, -0.1, -0.15], [-0.2, -0.25, 0.0]])


# ---------------------------------------------------------------------- GAE
def test_gae_by_hand():
    values = T([[0.5, 0.6, 0.7], [0.2, 0.4, 99.0]])
    rewards = T([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    masked_values, advantages, returns = compute_advantages(values, rewards, mask, gamma=1.0, lam=0.9)
    # Row 0: delta = [0.1, 0.1, 0.3]; A_2 = 0.3, A_1 = 0.1 + 0.9 * 0.3, A_0 = 0.1 + 0.9 * 0.37.
    # Row 1: the masked third token is cut: delta = [0.4 - 0.2, 2.0 - 0.4]; A = [0.2 + 0.9 * 1.6, 1.6].
    raw = T([[0.433, 0.37, 0.3], [1.64, 1.6, 0.0]])
    assert close(returns * mask, (raw + masked_values) * mask, 1e-5)
    assert close(advantages * mask, masked_whiten(raw, mask) * mask, 1e-5)
    assert close(masked_mean(advantages, mask), 0.0, 1e-5)


def test_gae_discount():
    values, rewards, mask = T([[0.0, 0.0]]), T([[0.0, 1.0]]), T([[1.0, 1.0]])
    _, _, returns = compute_advantages(values, rewards, mask, gamma=0.5, lam=1.0)
    assert close(returns, [[0.5, 1.0]])


def test_whiten_rewards_keeps_the_mean_and_zero_on_padding():
    values, rewards, mask = torch.zeros(1, 4), T([[1.0, 2.0, 3.0, 0.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    _, _, returns = compute_advantages(values, rewards, mask, gamma=1.0, lam=1.0, whiten_rewards=True)
    # whitened rewards [1, 2, 3] (mean 2, std 1, mean kept); returns are their reverse cumulative sums.
    assert close(returns[0, :3], [6.0, 5.0, 3.0], 1e-4)


# ---------------------------------------------------------------------- clipped losses
def test_clipped_policy_loss_by_hand():
    old = T([[0.0, 0.0]])
    new = T([[math.log(1.5), math.log(0.5)]])
    loss, clipfrac, ratio = policy_loss(new, old, T([[1.0, -1.0]]), T([[1.0, 1.0]]), cliprange=0.2)
    # -A * rho = [-1.5, 0.5]; -A * clip(rho) = [-1.2, 0.8]; max = [-1.2, 0.8].
    assert close(ratio, [[1.5, 0.5]], 1e-6)
    assert close(loss, -0.2, 1e-6) and close(clipfrac, 1.0)


def test_clipped_value_loss_by_hand():
    loss, clipfrac = value_loss(T([[1.0, 0.0]]), T([[0.5, 0.5]]), T([[1.0, 1.0]]), T([[1.0, 1.0]]), cliprange_value=0.2)
    # clipped V = [0.7, 0.3]; (V - R)^2 = [0, 1]; (Vc - R)^2 = [0.09, 0.49]; 0.5 * mean(max) = 0.5 * (0.09 + 1) / 2.
    assert close(loss, 0.2725) and close(clipfrac, 0.5)


def test_clm_loss_is_the_masked_mean_nll():
    assert close(clm_loss(T([[-1.0, -3.0, -100.0]]), T([[1.0, 1.0, 0.0]])), 2.0)


# ---------------------------------------------------------------------- distillation
def test_kd_divergences_at_temperature_by_hand():
    temperature = 2.0
    teacher = T([[[2 * math.log(3.0), 0.0]]])  # softmax(teacher / 2) = p = [0.75, 0.25]
    student = T([[[0.0, 0.0]]])  # q = [0.5, 0.5]
    mask = T([[1.0]])
    p, q = [0.75, 0.25], [0.5, 0.5]
    forward = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    m = [0.5 * pi + 0.5 * qi for pi, qi in zip(p, q)]
    jsd = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m)) + 0.5 * sum(
        qi * math.log(qi / mi) for qi, mi in zip(q, m)
    )
    assert close(kd_loss(student, teacher, mask, "forward_kl", temperature), forward * 4, 1e-6)
    assert close(kd_loss(student, teacher, mask, "reverse_kl", temperature), reverse * 4, 1e-6)
    assert close(kd_loss(student, teacher, mask, "jsd", temperature, beta=0.5), jsd * 4, 1e-6)


def test_kd_divergence_is_zero_for_equal_distributions_and_masks_tokens():
    logits = torch.randn(2, 3, 7)
    for divergence in ("forward_kl", "reverse_kl", "jsd"):
        assert close(kd_divergence(logits, logits, divergence), torch.zeros(2, 3), 1e-6)
    teacher = torch.randn(1, 2, 7)
    student = torch.stack([teacher[0, 0], torch.randn(7)]).unsqueeze(0)
    # the second token differs but is masked out
    assert close(kd_loss(student, teacher, T([[1.0, 0.0]]), "forward_kl"), 0.0, 1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_jsd_matches_trl_gkd(beta, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    ours = kd_divergence(student, teacher, "jsd", temperature=1.5, beta=beta).mean()
    theirs = (
        GKDTrainer.generalized_jsd_loss(student, teacher, beta=beta, temperature=1.5, reduction="none").sum(-1).mean()
    )
    assert close(ours, theirs, 1e-5)


# ---------------------------------------------------------------------- KL controller and early stopping
def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000.0)
    ctl.update(9.0, n_steps=64)  # error 0.5, clipped to 0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 64 / 10000))
    value = ctl.value
    ctl.update(6.6, n_steps=64)  # error 0.1
    assert ctl.value == pytest.approx(value * (1 + 0.1 * 64 / 10000))
    value = ctl.value
    ctl.update(0.0, n_steps=64)  # error -1, clipped to -0.2
    assert ctl.value == pytest.approx(value * (1 - 0.2 * 64 / 10000))
    restored = AdaptiveKLController(0.2, 6.0, 10000.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_fixed_kl_controller_and_factory():
    ctl = FixedKLController(0.3)
    ctl.update(100.0, 64)
    assert ctl.value == 0.3

    class Options:
        adap_kl_ctrl, init_kl_coef, target, horizon = False, 0.1, 6.0, 10000.0

    assert type(make_kl_controller(Options())) is FixedKLController


def test_early_stop_trigger_is_one_and_a_half_target_kl():
    stopper = EarlyStopping(True, target_kl=0.1)
    assert stopper.stop_epochs(0.151) and not stopper.stop_epochs(0.149)
    assert not EarlyStopping(False, target_kl=0.1).stop_epochs(10.0)


def test_run_level_patience():
    stopper = EarlyStopping(False, 1.0, patience=2, min_delta=0.1)
    assert [stopper.stop_run(r) for r in (1.0, 1.05, 1.2, 1.25, 1.3)] == [False, False, False, False, True]
    assert not any(EarlyStopping(False, 1.0, patience=0).stop_run(r) for r in (3.0, 2.0, 1.0))


# ---------------------------------------------------------------------- a whole step against TRL 0.11.4
TRL_DATA = Path(__file__).parent / "data" / "trl011"
COMPARED = [
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/loss/total",
    "objective/kl",
    "objective/kl_coef",
    "objective/entropy",
    "ppo/policy/entropy",
    "ppo/policy/approxkl",
    "ppo/policy/policykl",
    "ppo/policy/clipfrac",
    "ppo/val/vpred",
    "ppo/val/error",
    "ppo/val/clipfrac",
    "ppo/returns/mean",
    "ppo/mean_scores",
    "ppo/mean_non_score_reward",
]


@pytest.mark.parametrize("variant", ["plain", "extra"])
def test_step_matches_recorded_trl_0_11(variant, tmp_path):
    """Replays scripts/trl011_reference.py's batches; 'extra' covers GAS, full KL, whitening, clipping, early stop."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from tnd_core import CustomPPOConfig
    from tnd_core.models import StudentModel
    from tnd_core.trainers import CustomPPOTrainer

    root = TRL_DATA / variant
    recorded = json.loads((root / "stats.json").read_text())
    result = torch.load(root / "result.pt")
    student = StudentModel(GPT2LMHeadModel.from_pretrained(root / "init"), AutoTokenizer.from_pretrained(root / "init"))
    student.v_head.load_state_dict(torch.load(root / "init_value_head.pt"))
    options = {k: v for k, v in recorded["options"].items()}
    config = CustomPPOConfig(
        **options,
        optimizer_name="adam",
        kl_reference="initial_student",
        distill_coef=0.0,
        use_teacher_demos=False,
        output_dir=str(tmp_path),
    )
    trainer = CustomPPOTrainer(student=student, config=config)
    np.random.seed(0)  # TRL 0.11 shuffles mini-batches with numpy's global generator
    for batch, theirs in zip(result["batches"], recorded["stats"]):
        ours = trainer.step(batch["queries"], batch["responses"], batch["scores"])
        for name in COMPARED:
            assert ours[name] == pytest.approx(theirs[name], abs=2e-5), name
    final = student.pretrained_model.state_dict()
    for name, value in result["lm"].items():
        assert close(final[name], value, 1e-4), name
    for name, value in result["value_head"].items():
        assert close(student.v_head.state_dict()[name], value, 1e-5), name
    if variant == "extra":
        assert ours["ppo/early_stopped"] == 1.0 and ours["ppo/epochs_run"] < config.ppo_epochs
