"""Knowledge distillation (`model=distill`, `model=distill_gpt`): the losses, the teacher kept out of training state,
tiny runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.tasks.distillation import (
    CausalLMDistillationModule,
    DistillationModule,
    distillation_loss,
    next_token_distillation_loss,
)
from lightning_llm.train import train

STUDENT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
           "max_position_embeddings": 64}
BUNDLED = Path(__file__).resolve().parents[1] / "lightning_llm" / "data" / "bundled"


def _teacher(directory: Path, vocab_size: int, num_labels: int = 2, tokenizer=None) -> Path:
    """A (random) BERT classifier saved like a classify run's hf_model: bigger than the student."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=vocab_size, hidden_size=48, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=96,
                                                     max_position_embeddings=64, num_labels=num_labels))
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def test_kd_term_equals_a_hand_computation() -> None:
    student = torch.tensor([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    temperature = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / temperature) for v in s_row)
        zt = sum(math.exp(v / temperature) for v in t_row)
        p_s = [math.exp(v / temperature) / zs for v in s_row]
        p_t = [math.exp(v / temperature) / zt for v in t_row]
        expected += sum(t * math.log(t / s) for t, s in zip(p_t, p_s))  # KL(teacher || student)
    expected = expected / len(student) * temperature ** 2
    assert distillation_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_gets_no_gradient_and_stays_out_of_the_checkpoint(tmp_path: Path) -> None:
    teacher_dir = _teacher(tmp_path / "teacher", vocab_size=100)
    module = DistillationModule(teacher_name_or_path=str(teacher_dir), vocab_size=100, alpha=0.3,
                                special_token_ids={"pad_token_id": 0}, **STUDENT)
    module.setup("fit")
    module.train()  # what Lightning does at fit start: the teacher stays in eval mode
    assert module.teacher is not None and not module.teacher.training
    batch = {"input_ids": torch.randint(1, 100, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    out = module.model(**batch)
    loss = 0.3 * out.loss + 0.7 * distillation_loss(out.logits, module.teacher_logits(batch), 2.0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)
    teacher_ids = {id(p) for p in module.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}  # hence in no optimizer group
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert sum(p.numel() for p in module.parameters()) < sum(p.numel() for p in module.teacher.parameters())


def test_incompatible_teacher_fails_in_one_line(tmp_path: Path) -> None:
    student = {"vocab_size": 100, "special_token_ids": {"pad_token_id": 0}, **STUDENT}
    module = DistillationModule(teacher_name_or_path=str(_teacher(tmp_path / "t3", 100, num_labels=3)), **student)
    with pytest.raises(UserError, match="model.teacher_name_or_path: the teacher has 3 labels, the student 2"):
        module.setup("fit")
    texts = ["a good film", "a bad film", "not good at all"] * 20
    ours, theirs = (train_tokenizer(texts, "wordpiece", 60, tmp_path / "tok1"),
                    train_tokenizer(["another tokenizer entirely", "quite different words"] * 30, "wordpiece", 60,
                                    tmp_path / "tok2"))
    module = DistillationModule(teacher_name_or_path=str(_teacher(tmp_path / "t", 100, tokenizer=theirs)), **student)
    module.tokenizer = ours
    with pytest.raises(UserError, match="model.tokenizer_name_or_path: the student's tokenizer is not the teacher's"):
        module.setup("fit")
    with pytest.raises(UserError, match="model.teacher_name_or_path: directory not found"):
        DistillationModule(teacher_name_or_path=str(tmp_path / "nope"), **student).setup("fit")


def test_tiny_distillation_run_trains_and_reports_both_models(compose_cfg, tmp_path: Path) -> None:
    texts = [line.split(",")[0] for line in (BUNDLED / "reviews_train.csv").read_text().splitlines()[1:300]]
    tokenizer = train_tokenizer(texts, "wordpiece", 300, tmp_path / "tok")
    teacher_dir = _teacher(tmp_path / "teacher", len(tokenizer), tokenizer=tokenizer)
    results = train(compose_cfg(["model=distill", f"model.teacher_name_or_path={teacher_dir}",
                                 *[f"model.{k}={v}" for k, v in STUDENT.items()], "trainer.max_epochs=1",
                                 "++trainer.limit_train_batches=6", "++trainer.limit_val_batches=2",
                                 "++trainer.limit_test_batches=2", "trainer.log_every_n_steps=2",
                                 "callbacks.rich_progress_bar=null", "data.max_length=32"]))
    run = tmp_path / "run"
    metrics = (run / "csv" / "metrics.csv").read_text()
    assert "train/kd_loss" in metrics.splitlines()[0]
    details = results["details"]["test"]
    student_params = sum(p.numel() for p in
                         BertForSequenceClassification.from_pretrained(run / "hf_model").parameters())
    assert details["student_params"] == student_params < details["teacher_params"]
    assert details["student_acc"] == pytest.approx(results["test"]["test/acc"])
    assert details["student_examples_per_s"] > 0 and details["teacher_examples_per_s"] > 0
    assert "test/teacher_acc" in results["test"]
    checkpoint = torch.load(results["last_checkpoint"], map_location="cpu", weights_only=True)
    assert not any("teacher" in k for k in checkpoint["state_dict"])
    assert json.loads((run / "hf_model" / "config.json").read_text())["hidden_size"] == STUDENT["hidden_size"]


# ------------------------------------------------------------------------------------------------------ causal LM
GPT_STUDENT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
               "max_position_embeddings": 32}


def _gpt_teacher(directory: Path, vocab_size: int, tokenizer=None) -> Path:
    """A random GPT-2, bigger than the student, with weights drawn wide (std 0.2, GPT-2's is 0.02) so that its
    next-token distributions are far from uniform and depend on the context: something a student can be seen to
    learn."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=48, n_layer=2, n_head=2, n_positions=32,
                                       initializer_range=0.2, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def _softmax(row: list[float], temperature: float) -> list[float]:
    z = sum(math.exp(v / temperature) for v in row)
    return [math.exp(v / temperature) / z for v in row]


def test_next_token_kd_term_equals_a_hand_computation() -> None:
    """KL per predicted token over the vocabulary: position t against target t + 1, padded targets (-100) left out,
    the student's extra vocabulary rows (padding to a multiple of 8) cut off."""
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 4, 3) * 2, torch.randn(2, 4, 4) * 2
    labels = torch.tensor([[5, 1, 2, 0], [4, 2, -100, -100]])  # row 2: only position 0 predicts a token
    temperature = 1.5
    kls = []
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        p_t = _softmax(teacher[b, t].tolist(), temperature)
        p_s = _softmax(student[b, t, :3].tolist(), temperature)
        kls.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    expected = sum(kls) / len(kls) * temperature ** 2
    got = next_token_distillation_loss(student, teacher, labels, temperature).item()
    assert got == pytest.approx(expected, rel=1e-6)
    padded_all = torch.full_like(labels, -100)
    assert next_token_distillation_loss(student, teacher, padded_all, temperature).item() == 0.0


def test_causal_student_with_alpha_0_learns_the_teachers_distributions(tmp_path: Path) -> None:
    """alpha=0: the student trains on the KL term alone, through Lightning's loop; its KL to the teacher on held-out
    sequences falls well below the one at initialization (measured: to 0.67 of it after 20 steps; the rest of a random
    teacher is context noise a 1-layer student cannot learn from 48 sequences), and the teacher gets no gradient."""
    vocab = 50
    teacher_dir = _gpt_teacher(tmp_path / "teacher", vocab)
    torch.manual_seed(1)
    module = CausalLMDistillationModule(teacher_name_or_path=str(teacher_dir), alpha=0.0, temperature=1.0,
                                        vocab_size=vocab, learning_rate=1e-2, warmup_ratio=0.0, **GPT_STUDENT)
    ids = torch.randint(0, vocab, (64, 16))
    train_batches = [{"input_ids": ids[i:i + 8], "labels": ids[i:i + 8]} for i in range(0, 48, 8)]
    held_out = {"input_ids": ids[48:], "labels": ids[48:]}

    def kl_to_teacher() -> float:
        module.eval()
        with torch.no_grad():
            logits = module.model(input_ids=held_out["input_ids"]).logits
            return next_token_distillation_loss(logits, module.teacher_logits(held_out), held_out["labels"],
                                                1.0).item()

    module.setup("fit")
    before = kl_to_teacher()
    trainer = pl.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, DataLoader(train_batches, batch_size=None, shuffle=False))
    after = kl_to_teacher()
    assert after < 0.85 * before, (before, after)
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert not module.teacher.training


def test_tiny_causal_lm_distillation_run_reports_both_models(compose_cfg, tmp_path: Path) -> None:
    texts = (BUNDLED / "corpus_train.txt").read_text().splitlines()[:300]
    tokenizer = train_tokenizer(texts, "bpe", 300, tmp_path / "tok")
    teacher_dir = _gpt_teacher(tmp_path / "teacher", len(tokenizer), tokenizer=tokenizer)
    results = train(compose_cfg(["model=distill_gpt", "data=text_corpus", f"model.teacher_name_or_path={teacher_dir}",
                                 *[f"model.{k}={v}" for k, v in GPT_STUDENT.items()], "data.block_size=32",
                                 "trainer.max_epochs=1", "++trainer.limit_train_batches=4",
                                 "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2",
                                 "trainer.log_every_n_steps=2", "callbacks.rich_progress_bar=null",
                                 "callbacks.generation_samples=null"]))
    run = tmp_path / "run"
    assert "train/kd_loss" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    details, test = results["details"]["test"], results["test"]
    assert details["student_ppl"] == pytest.approx(test["test/ppl"])
    assert details["teacher_ppl"] == pytest.approx(test["test/teacher_ppl"])
    assert details["student_params"] == sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(run / "hf_model")
                                            .parameters()) < details["teacher_params"]
    checkpoint = torch.load(results["last_checkpoint"], map_location="cpu", weights_only=True)
    assert not any("teacher" in k for k in checkpoint["state_dict"])
