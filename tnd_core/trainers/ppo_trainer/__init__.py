"""PPO with teacher-student distillation: the trainer and its small math modules."""
