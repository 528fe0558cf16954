"""`tnd`: build the embedded bundle, train with TnD, train reward models, inspect configs.

Runs the same under `accelerate launch -m tnd_core.cli train ...` (or `accelerate launch $(which tnd) train ...`):
the trainer takes devices, precision and processes from accelerate.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from tnd_core.config import CustomPPOConfig, add_config_arguments, config_from_arguments, json_schema
from tnd_core.errors import ConfigError, TndError
from tnd_core.sources import BUNDLE, SOURCE_FIELDS, is_bundle, recommended_config_path, resolve_tokenizer
from tnd_core.trainers.reward_trainer.config import RewardTrainingConfig


def _resolved_config(args: argparse.Namespace) -> CustomPPOConfig:
    base = CustomPPOConfig.load(args.config) if args.config else None
    return config_from_arguments(args, base)


def _training_config(args: argparse.Namespace) -> CustomPPOConfig:
    """The config `tnd train` runs with, from its parsed arguments: the --config file (or defaults) with the
    flags applied; a run whose every source is the bundle (flags left out default to it), without a config
    file, starts from the bundle's recommended config. Raises ConfigError for any bad file or flag value."""
    on_bundle = all(is_bundle(getattr(args, name, BUNDLE)) for name in SOURCE_FIELDS)
    if args.config or not on_bundle:
        return _resolved_config(args)
    return config_from_arguments(args, CustomPPOConfig.load(recommended_config_path()))


def check_output_dir(path: str) -> None:
    """Create the output folder and write a file in it now, so that a folder that cannot be written fails
    before any model loads or trains (ConfigError naming output_dir)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError("output_dir", path, f"cannot be created or written: {exc.strerror or exc}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from tnd_core.pipeline import run_training

    config = _training_config(args)
    check_output_dir(config.output_dir)
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


def _cmd_reward(args: argparse.Namespace) -> int:
    """`tnd reward`: train, save, print the held-out metrics."""
    from tnd_core.trainers.reward_trainer.reward import train_reward_model

    base = RewardTrainingConfig.load(args.config) if args.config else None
    config = config_from_arguments(args, base, RewardTrainingConfig)
    if config.output_dir:  # train_reward_model itself refuses an empty one
        check_output_dir(config.output_dir)
    result = train_reward_model(config.replace(tokenizer=resolve_tokenizer(config.tokenizer)))
    held_out = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()) or "no held-out data"
    print(f"reward model ({result.mode}) saved to {result.output_dir}: {held_out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `tnd` argument parser; the flags of `train`/`config` and of `reward` are generated from the metadata
    of CustomPPOConfig and RewardTrainingConfig."""
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
    bundle.add_argument(
        "--size",
        default=None,
        choices=("tiny", "default"),
        help="tiny: a minute, for tests; default: the product bundle (default: $TND_BUNDLE_SIZE or 'default').",
    )
    bundle.add_argument(
        "--cache_dir", default=None, help="Where to build it (default: $TND_CACHE_DIR or ~/.cache/tnd_studio)."
    )
    bundle.add_argument("--force", action="store_true", help="Rebuild even if a current bundle exists.")
    bundle.set_defaults(func=_cmd_bundle)

    reward = sub.add_parser("reward", help="Train a reward model (pairwise or pointwise) from a config file or flags.")
    reward.add_argument("--config", help="YAML or JSON file of reward-training options; flags given here override it.")
    add_config_arguments(reward, RewardTrainingConfig)
    reward.set_defaults(func=_cmd_reward)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tnd` console script.

    Expected failures (a bad option or config file, data that does not fit, a folder that cannot be
    written or read) end in one line `tnd <command>: error: ...` on stderr and a non-zero exit: 2 for
    options and inputs (as argparse's own errors), 1 for the file system; other exceptions are bugs
    and keep their traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TndError as exc:
        # a refused memory plan keeps its table's lines (tnd_core.models.memory_plan.MemoryPlanError)
        _report(args.command, str(exc), keep_lines=getattr(exc, "plan", None) is not None)
        return 2
    except OSError as exc:
        _report(args.command, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return 1


def _report(command: str, message: str, keep_lines: bool = False) -> None:
    """The one line an expected failure ends with (messages spanning lines are joined, unless `keep_lines`)."""
    print(f"tnd {command}: error: {message if keep_lines else ' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
