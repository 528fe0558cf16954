"""Compatibility layers for code written against other libraries' training APIs.

`tnd_core.compat.trl` takes the classic TRL 0.x PPO loop (`PPOConfig`, `PPOTrainer.generate/step/log_stats`,
`AutoModelForCausalLMWithValueHead`) and runs it on CustomPPOTrainer; docs/MIGRATING_FROM_TRL.md maps it.
"""
