"""The bundle's recipe: what `build_into` writes into a (staging) bundle folder, stage by stage.

1. corpus, held-out evaluation sentences (none of them in the corpus) and prompts (1-3 word prefixes);
2. a word-level tokenizer;
3. the teacher: a small GPT-2 pretrained with causal LM on the corpus (transformers' Trainer),
   keeping checkpoints at steps 2^k; its grammaticality is measured on sampled sentences;
4. the stage reward model (the paper's reward): a small BERT regressor trained to predict log2(step)
   of the teacher checkpoint that wrote a text;
5. the grammar reward model: pairwise (TRL RewardTrainer) on (grammatical, perturbed) pairs,
   initialised from the teacher (as reward models usually start from a pretrained LM) with two
   fresh layers on top;
6. the student: a GPT-2 no larger than the teacher, randomly initialised with a fixed seed;
7. `config.yaml`: CustomPPOConfig values recommended for this bundle.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tnd_core.bundle.progress import BuildProgress
from tnd_core.bundle.spec import BUNDLE_VERSION, RECOMMENDED_PPO, BundlePaths, BundleSpec, ModelSpec

logger = logging.getLogger(__name__)

GRAMMAR_EXTRA_LAYERS = 2
SEEDS = {
    "corpus": 0,
    "eval": 1,
    "prompts": 2,
    "prefix": 3,
    "pairs": 4,
    "perturb": 5,
    "teacher": 6,
    "student": 7,
    "stage": 8,
    "grammar": 9,
    "sample": 10,
}


# ---------------------------------------------------------------------- transformers' Trainer
def _trainer_callbacks(progress: BuildProgress, checkpoint_dir: Path | None = None) -> list[Any]:
    from transformers import TrainerCallback

    class StageProgress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            progress.update(state.global_step / max(1, state.max_steps))
            step = state.global_step
            if checkpoint_dir is not None and (step & (step - 1) == 0 or step == state.max_steps):
                model.save_pretrained(checkpoint_dir / f"step-{step:06d}")

    return [StageProgress()]


def _quiet(trainer: Any) -> Any:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


# ---------------------------------------------------------------------- build stages
def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _held_out(n: int, exclude: set[str], seed: int) -> list[str]:
    from tnd_core.data.language import generate_sentence

    rng, kept, seen = random.Random(seed), [], set(exclude)
    for _ in range(200 * n):
        if len(kept) == n:
            break
        sentence = generate_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            kept.append(sentence)
    return kept


def _write_data(paths: BundlePaths, spec: BundleSpec) -> dict[str, int]:
    from tnd_core.data.language import generate_corpus, sentence_prefixes

    corpus = generate_corpus(spec.corpus_sentences, SEEDS["corpus"])
    paths.corpus.write_text("\n".join(corpus) + "\n")
    eval_sentences = _held_out(spec.eval_sentences, set(corpus), SEEDS["eval"])
    eval_prompts = sentence_prefixes(eval_sentences, SEEDS["prefix"])
    _write_jsonl(paths.eval, [{"text": s, "prompt": p} for s, p in zip(eval_sentences, eval_prompts)])
    candidates = sentence_prefixes(generate_corpus(20 * spec.prompts, SEEDS["prompts"]), SEEDS["prefix"])
    prompts = list(dict.fromkeys(candidates))[: spec.prompts]
    _write_jsonl(paths.prompts, [{"prompt": p} for p in prompts])
    return {"corpus_sentences": len(corpus), "eval_sentences": len(eval_sentences), "prompts": len(prompts)}


def _gpt2(spec: ModelSpec, tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _train_teacher(paths: BundlePaths, spec: BundleSpec, tokenizer: Any, progress: BuildProgress) -> Any:
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    sentences = paths.corpus.read_text().splitlines()
    ids = [seq + [tokenizer.eos_token_id] for seq in tokenizer(sentences)["input_ids"]]
    model = _gpt2(spec.teacher, tokenizer, SEEDS["teacher"])
    args = TrainingArguments(
        output_dir=str(paths.root / "_teacher_run"),
        max_steps=spec.teacher_steps,
        per_device_train_batch_size=spec.teacher_batch_size,
        learning_rate=spec.teacher_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=max(1, spec.teacher_steps // 10),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=SEEDS["teacher"],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=_trainer_callbacks(progress, checkpoint_dir=paths.teacher_checkpoints),
    )
    _quiet(trainer).train()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    model = trainer.model.cpu().eval()
    model.save_pretrained(paths.teacher)
    tokenizer.save_pretrained(paths.teacher)
    return model


def _stage_data(paths: BundlePaths, spec: BundleSpec, tokenizer: Any, progress: BuildProgress) -> Any:
    from datasets import Dataset
    from transformers import GPT2LMHeadModel

    from tnd_core.evaluation.grammar import sample_texts

    checkpoints = sorted(paths.teacher_checkpoints.iterdir())
    texts, stages = [], []
    for i, folder in enumerate(checkpoints):
        step = int(folder.name.rpartition("-")[2])
        model = GPT2LMHeadModel.from_pretrained(folder)
        samples = sample_texts(model, None, tokenizer, n=spec.stage_samples_per_checkpoint, seed=SEEDS["stage"] + step)
        for text in samples:
            if text:
                texts.append(text)
                stages.append(math.log2(step))
        progress.update((i + 1) / len(checkpoints))
    return Dataset.from_dict({"text": texts, "label": stages})


def _grammar_pairs(spec: BundleSpec, exclude: set[str]) -> Any:
    from datasets import Dataset

    from tnd_core.data.perturb import perturb

    rng = random.Random(SEEDS["perturb"])
    chosen, rejected = [], []
    for sentence in _held_out(spec.grammar_pairs, exclude, SEEDS["pairs"]):
        result = perturb(sentence, rng)
        if result is not None:
            chosen.append(sentence)
            rejected.append(result[0])
    return Dataset.from_dict({"chosen": chosen, "rejected": rejected})


def _grammar_model(paths: BundlePaths, spec: BundleSpec, tokenizer: Any) -> Any:
    """The teacher's layers with GRAMMAR_EXTRA_LAYERS fresh ones on top and a one-output head.

    The teacher's layers know the language; the extra layers give the last position room to gather
    evidence of an error anywhere in the sentence (with the teacher's two layers alone, held-out
    pair accuracy stalls near 94%; with two more it passes 98% in fewer steps).
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(SEEDS["grammar"])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh layers and head are reported as newly initialised: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            paths.teacher, num_labels=1, n_layer=spec.teacher.n_layer + GRAMMAR_EXTRA_LAYERS
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _recommended_config(paths: BundlePaths, spec: BundleSpec) -> None:
    from tnd_core.config import CustomPPOConfig

    CustomPPOConfig.from_dict({**RECOMMENDED_PPO, **spec.ppo_overrides}).save(paths.config)


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def build_into(paths: BundlePaths, size: str, spec: BundleSpec, progress: BuildProgress) -> None:
    """Run every stage of the recipe into `paths`, then write bundle.json: sizes, timings, measured quality."""
    from tnd_core.data.tokenizer import save_tokenizer
    from tnd_core.evaluation.grammar import grammaticality_rate, sample_texts
    from tnd_core.trainers.reward_trainer import RewardTrainingConfig, small_bert_classifier, train_reward_model

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 2)

    progress.stage(0.0, 0.03, "writing the baby language: corpus, held-out sentences, prompts, tokenizer")
    counts = _write_data(paths, spec)
    tokenizer = save_tokenizer(paths.tokenizer)
    timed("data")

    progress.stage(0.03, 0.6, f"pretraining the teacher ({spec.teacher_steps} steps, checkpoints at 2^k)")
    teacher = _train_teacher(paths, spec, tokenizer, progress)
    timed("teacher")

    progress.stage(0.6, 0.63, "measuring the teacher's grammaticality")
    teacher_samples = sample_texts(teacher, None, tokenizer, n=spec.grammar_samples, seed=SEEDS["sample"])
    teacher_grammaticality = grammaticality_rate(teacher_samples)
    timed("teacher_eval")

    progress.stage(0.63, 0.7, "sampling texts from the teacher checkpoints")
    stage_data = _stage_data(paths, spec, tokenizer, progress)
    progress.stage(0.7, 0.8, "training the stage reward model (predicts log2 of the checkpoint step)")
    stage_model = small_bert_classifier(tokenizer, num_labels=1, seed=SEEDS["stage"])
    # Start the regressor at the mean stage so its few steps go into telling stages apart, not into the offset.
    stage_model.classifier.bias.data.fill_(sum(stage_data["label"]) / len(stage_data))
    stage_config = RewardTrainingConfig(
        mode="regression",
        output_dir=str(paths.reward_stage),
        eval_fraction=0.15,
        epochs=spec.stage_epochs,
        learning_rate=1e-3,
        batch_size=32,
        max_length=spec.teacher.n_positions,
        seed=SEEDS["stage"],
    )
    stage = train_reward_model(
        stage_config,
        model=stage_model,
        tokenizer=tokenizer,
        data=stage_data,
        callbacks=_trainer_callbacks(progress),
        show_progress=False,
    )
    timed("reward_stage")

    progress.stage(0.8, 0.97, "training the grammar reward model (pairwise, TRL RewardTrainer)")
    eval_texts = {json.loads(line)["text"] for line in paths.eval.read_text().splitlines()}
    grammar_config = RewardTrainingConfig(
        mode="pairwise",
        output_dir=str(paths.reward_grammar),
        eval_fraction=0.15,
        epochs=spec.grammar_epochs,
        learning_rate=spec.grammar_learning_rate,
        batch_size=32,
        max_length=spec.teacher.n_positions,
        seed=SEEDS["grammar"],
    )
    grammar = train_reward_model(
        grammar_config,
        model=_grammar_model(paths, spec, tokenizer),
        tokenizer=tokenizer,
        data=_grammar_pairs(spec, eval_texts),
        callbacks=_trainer_callbacks(progress),
        show_progress=False,
    )
    timed("reward_grammar")

    progress.stage(0.97, 1.0, "saving the from-scratch student and the recommended config")
    student = _gpt2(spec.student, tokenizer, SEEDS["student"])
    student.save_pretrained(paths.student)
    tokenizer.save_pretrained(paths.student)
    student_samples = sample_texts(student, None, tokenizer, n=spec.grammar_samples, seed=SEEDS["sample"])
    student_grammaticality = grammaticality_rate(student_samples)
    _recommended_config(paths, spec)
    timed("student")

    manifest = {
        "version": BUNDLE_VERSION,
        "size": size,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": timings,
        "spec": asdict(spec),
        "counts": {
            **counts,
            "vocabulary": len(tokenizer),
            "teacher_parameters": _parameters(teacher),
            "student_parameters": _parameters(student),
        },
        "teacher_checkpoints": sorted(int(p.name.rpartition("-")[2]) for p in paths.teacher_checkpoints.iterdir()),
        "metrics": {
            "teacher_grammaticality": teacher_grammaticality,
            "student_grammaticality": student_grammaticality,
            "reward_stage_pearson": stage.metrics.get("pearson"),
            "reward_stage_mse": stage.metrics.get("mse"),
            "reward_grammar_accuracy": grammar.metrics.get("accuracy"),
        },
        "teacher_samples": teacher_samples[:10],
    }
    paths.manifest.write_text(json.dumps(manifest, indent=2))
    progress.close()
    logger.info("bundle %s built in %.0f s: %s", size, manifest["build_seconds"], manifest["metrics"])
