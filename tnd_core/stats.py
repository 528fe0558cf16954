"""The name of every statistic a step reports, written once.

The trainer writes these keys into `StepEvent.stats` and `metrics.jsonl`; the app's plots, the
benchmarks, the docs (docs/ALGORITHM.md, section "Statistics") and the tests read them from here.
The PPO names are TRL 0.11's, so logs of classic PPO runs line up with ours.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {}


def _stat(name: str, description: str) -> str:
    DESCRIPTIONS[name] = description
    return name


# --- the environment: reward model scores before any processing
REWARD_MEAN = _stat("env/reward_mean", "Mean reward-model score of the trials.")
REWARD_STD = _stat("env/reward_std", "Standard deviation of the trials' scores.")
DEMO_REWARD_MEAN = _stat("env/demo_reward_mean", "Mean score of the teacher's demonstrations (when demos are on).")

# --- the objective: what the KL penalty sees
KL = _stat("objective/kl", "Summed per-token KL of the batch's responses against the reference, averaged over samples.")
KL_COEF = _stat("objective/kl_coef", "The KL penalty coefficient beta used in this step.")
ENTROPY = _stat(
    "objective/entropy", "Summed negative log-probability of the sampled responses (a sample estimate of the entropy)."
)
MEAN_NON_SCORE_REWARD = _stat("ppo/mean_non_score_reward", "Mean per-token KL penalty -beta * kl over response tokens.")
MEAN_SCORES = _stat(
    "ppo/mean_scores", "Mean of the processed scores (after scaling, normalisation, clipping and shaping)."
)

# --- the PPO update, averaged over every mini-batch of every epoch
LOSS_POLICY = _stat("ppo/loss/policy", "Clipped policy-gradient loss.")
LOSS_VALUE = _stat("ppo/loss/value", "Clipped value loss (before vf_coef).")
LOSS_DISTILL = _stat("ppo/loss/distill", "Logit-distillation loss (before distill_coef).")
LOSS_CLM = _stat("ppo/loss/clm", "Causal-LM loss on the batch's responses (before clm_coef).")
LOSS_TOTAL = _stat("ppo/loss/total", "The loss that was back-propagated.")
POLICY_ENTROPY = _stat(
    "ppo/policy/entropy", "Mean entropy of the policy's next-token distributions over response tokens."
)
APPROX_KL = _stat("ppo/policy/approxkl", "0.5 * mean squared log-ratio of the new and old policies.")
POLICY_KL = _stat("ppo/policy/policykl", "Mean log-ratio old/new: the KL that early stopping compares to target_kl.")
CLIPFRAC = _stat("ppo/policy/clipfrac", "Share of response tokens whose policy ratio was clipped.")
VALUE_PRED = _stat("ppo/val/vpred", "Mean value prediction.")
VALUE_ERROR = _stat("ppo/val/error", "Mean squared error of the value predictions against the returns.")
VALUE_CLIPFRAC = _stat("ppo/val/clipfrac", "Share of value predictions whose clipped loss was the larger one.")
RETURNS_MEAN = _stat("ppo/returns/mean", "Mean GAE return.")
SKIPPED_MINIBATCHES = _stat(
    "ppo/skipped_minibatches", "Share of mini-batches skipped because their mean ratio passed ratio_threshold."
)
LEARNING_RATE = _stat("ppo/learning_rate", "Learning rate after this step.")
EARLY_STOPPED = _stat("ppo/early_stopped", "1 when early stopping ended this batch's epochs before ppo_epochs.")
EPOCHS_RUN = _stat("ppo/epochs_run", "PPO epochs actually run on this batch.")

# --- distillation and the plain causal-LM steps
TEACHER_STUDENT_KL = _stat(
    "distill/teacher_student_kl", "Mean forward KL(teacher || student) per response token of the trials."
)
CLM_LOSS = _stat("clm/loss", "Causal-LM loss of a CLM step on corpus text.")

# --- sizes, time and speed
RESPONSE_LEN_MEAN = _stat(
    "tokens/response_len_mean", "Mean number of response tokens that count (up to the first EOS)."
)
TIME_ROLLOUT = _stat("time/rollout", "Seconds generating trials and demos.")
TIME_SCORE = _stat("time/score", "Seconds decoding and scoring.")
TIME_TEACHER = _stat("time/teacher", "Seconds in the teacher's forward passes.")
TIME_OPTIMIZE = _stat("time/optimize", "Seconds in the student's forward, backward and optimizer steps.")
TIME_STEP = _stat("time/step", "Seconds of the whole step.")
SAMPLES_PER_S = _stat("perf/samples_per_s", "Samples (trials and demos) per second of the step.")
TOKENS_PER_S = _stat("perf/tokens_per_s", "Response tokens per second of the step.")
# --- written by the run's metrics log (metrics.jsonl), summed over the run and its resumes
WALL_CLOCK = _stat("time/wall_clock", "Seconds of training up to this step, summed over the run's resumes.")
TOKENS_SEEN = _stat(
    "tokens/student_seen",
    "Response tokens (trials and demos) the student trained on in PPO steps up to this step; CLM steps not counted.",
)
# Not in a step's StepEvent.stats: the metrics log adds them to each row.
RUN_TOTALS = frozenset({WALL_CLOCK, TOKENS_SEEN})

# The per-mini-batch statistics of the PPO update, in the order the update packs them.
MINIBATCH = (
    LOSS_POLICY,
    LOSS_VALUE,
    LOSS_DISTILL,
    LOSS_CLM,
    LOSS_TOTAL,
    POLICY_ENTROPY,
    APPROX_KL,
    POLICY_KL,
    CLIPFRAC,
    VALUE_PRED,
    VALUE_ERROR,
    VALUE_CLIPFRAC,
    RETURNS_MEAN,
    SKIPPED_MINIBATCHES,
)

# Evaluation metrics arrive in EvalEvent.metrics under their own names, written with this prefix to metrics.jsonl.
EVAL_PREFIX = "eval/"
