"""`tnd`: build the embedded bundle, train with TnD, train reward models, inspect configs.

Runs the same under `accelerate launch -m tnd_core.cli train ...` (or `accelerate launch $(which tnd) train ...`):
the trainer takes devices, precision and processes from accelerate.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tnd_core.config import CustomPPOConfig, add_config_arguments, config_from_arguments, json_schema
from tnd_core.errors import TndError
from tnd_core.sources import BUNDLE, SOURCE_FIELDS, is_bundle, recommended_config_path


def _resolved_config(args: argparse.Namespace) -> CustomPPOConfig:
    base = CustomPPOConfig.load(args.config) if args.config else None
    return config_from_arguments(args, base)


def _training_config(args: argparse.Namespace) -> CustomPPOConfig:
    """As `_resolved_config`, but a run whose every source is the bundle (flags left out default to it),
    without a config file, starts from the bundle's recommended config."""
    on_bundle = all(is_bundle(getattr(args, name, BUNDLE)) for name in SOURCE_FIELDS)
    if args.config or not on_bundle:
        return _resolved_config(args)
    return config_from_arguments(args, CustomPPOConfig.load(recommended_config_path()))


def _cmd_train(args: argparse.Namespace) -> int:
    from tnd_core.pipeline import run_training

    config = _training_config(args)
    run_training(config)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
    else:
        print(_resolved_config(args).to_yaml(), end="")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from tnd_core.bundle import build_bundle

    paths = build_bundle(size=args.size, cache_dir=args.cache_dir, force=args.force)
    info = paths.info()
    measured = ", ".join(f"{k}={v:.3f}" for k, v in info["metrics"].items() if v is not None)
    print(f"built in {info['build_seconds']:.0f} s; {measured}")
    print(f"bundle ready at {paths.root}")
    return 0


def _add_reward_arguments(parser: argparse.ArgumentParser) -> None:
    from tnd_core.trainers.reward_trainer.reward import MODES, SCRATCH

    """Flags of `tnd reward`."""
    parser.add_argument("--mode", default="pairwise", choices=MODES, help="pairwise: chosen/rejected pairs (TRL RewardTrainer); regression or classification: text + target.")
    parser.add_argument("--model", required=True, help=f"Hub id or local folder to start from, or '{SCRATCH}' for a small BERT built for --tokenizer.")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder or hub id, or 'bundle' (default: the model's own).")
    parser.add_argument("--data", required=True, help="Training data: CSV, JSONL or JSON file, a dataset folder or a hub dataset id.")
    parser.add_argument("--eval_data", default=None, help="Held-out data (default: --eval_fraction of --data).")
    parser.add_argument("--eval_fraction", type=float, default=0.1, help="Share of --data held out for the metrics when --eval_data is not given.")
    parser.add_argument("--output_dir", required=True, help="Folder the model and tokenizer are saved to.")
    parser.add_argument("--text_column", default="text", help="Column with the text (pointwise modes).")
    parser.add_argument("--label_column", default="label", help="Column with the target number or class (pointwise modes).")
    parser.add_argument("--chosen_column", default="chosen", help="Column with the preferred text (pairwise).")
    parser.add_argument("--rejected_column", default="rejected", help="Column with the rejected text (pairwise).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Passes over the training data.")
    parser.add_argument("--max_steps", type=int, default=-1, help="Optimizer steps; -1 trains for --epochs.")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Learning rate (AdamW, linear decay).")
    parser.add_argument("--batch_size", type=int, default=16, help="Examples (pairs in pairwise mode) per step.")
    parser.add_argument("--max_length", type=int, default=128, help="Texts are truncated to this many tokens.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")


def _cmd_reward(args: argparse.Namespace) -> int:
    """`tnd reward`: train, save, print the held-out metrics."""
    from tnd_core.trainers.reward_trainer.reward import train_reward_model

    result = train_reward_model(
        args.model,
        args.data,
        args.output_dir,
        mode=args.mode,
        tokenizer=args.tokenizer,
        eval_data=args.eval_data,
        eval_fraction=args.eval_fraction,
        text_column=args.text_column,
        label_column=args.label_column,
        chosen_column=args.chosen_column,
        rejected_column=args.rejected_column,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    held_out = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()) or "no held-out data"
    print(f"reward model ({result.mode}) saved to {result.output_dir}: {held_out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `tnd` argument parser; training flags are generated from CustomPPOConfig's metadata."""
    parser = argparse.ArgumentParser(prog="tnd", description="TnD Studio: PPO with teacher-student distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="Train a student (PPO + distillation) from a config file and/or flags.")
    train.add_argument("--config", help="YAML or JSON config file; flags given on the command line override it.")
    add_config_arguments(train)
    train.set_defaults(func=_cmd_train)

    config = sub.add_parser("config", help="Print the resolved config as YAML, or the config file's JSON schema.")
    config.add_argument("--config", help="YAML or JSON config file to start from.")
    config.add_argument("--schema", action="store_true", help="Print the JSON schema of config files.")
    add_config_arguments(config)
    config.set_defaults(func=_cmd_config)

    bundle = sub.add_parser("bundle", help="Build the embedded baby-language bundle (teacher, reward models, data).")
    bundle.add_argument("--size", default=None, choices=("tiny", "default"), help="tiny: a minute, for tests; default: the product bundle (default: $TND_BUNDLE_SIZE or 'default').")
    bundle.add_argument("--cache_dir", default=None, help="Where to build it (default: $TND_CACHE_DIR or ~/.cache/tnd_studio).")
    bundle.add_argument("--force", action="store_true", help="Rebuild even if a current bundle exists.")
    bundle.set_defaults(func=_cmd_bundle)

    reward = sub.add_parser("reward", help="Train a reward model (pairwise or pointwise).")
    _add_reward_arguments(reward)
    reward.set_defaults(func=_cmd_reward)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tnd` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TndError as exc:
        print(f"tnd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
