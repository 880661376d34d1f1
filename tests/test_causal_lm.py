"""GPT causal-LM training: loss falls, val/ppl is exp(token-weighted NLL) of the exported model, bad input fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from transformers import AutoModelForCausalLM

from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.generate import generate
from lightning_llm.runtime import builders
from lightning_llm.runtime.cli import run_or_exit
from lightning_llm.tasks.causal_lm import NextTokenMetrics, unigram_perplexity
from lightning_llm.train import train
from tests.conftest import TINY_GPT, compose_run_config

RUN_OVERRIDES = ["model=gpt", "data=text_corpus", *TINY_GPT, "model.max_position_embeddings=64",
                 "model.learning_rate=1e-2", "model.dropout=0.0", "data.block_size=32", "data.batch_size=8",
                 "trainer.max_epochs=1", "++trainer.limit_train_batches=40", "++trainer.limit_val_batches=3",
                 "++trainer.limit_test_batches=2", "trainer.log_every_n_steps=1", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory):
    """One tiny real run shared by this module's tests: (composed cfg, results.json content)."""
    cfg = compose_run_config(tmp_path_factory.mktemp("gpt") / "run", RUN_OVERRIDES)
    results = train(cfg)
    GlobalHydra.instance().clear()
    return cfg, results


def test_fast_run_trains_and_loss_falls(gpt_run) -> None:
    cfg, results = gpt_run
    run = Path(cfg.paths.output_dir)
    losses = pd.read_csv(run / "csv" / "metrics.csv")["train/loss"].dropna().tolist()
    assert len(losses) >= 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # nats
    val = results["val"]
    assert val["val/ppl"] < val["val/unigram_ppl"]
    assert math.isclose(val["val/ppl"], math.exp(val["val/loss"]), rel_tol=1e-6)
    assert results["optimized_metric"] == {"name": "val/ppl", "value": val["val/ppl"]}
    assert (run / "hf_model" / "config.json").is_file() and (run / "tokenizer" / "tokenizer.json").is_file()
    samples = (run / "generation_samples.txt").read_text()  # the callback enabled by model=gpt
    assert samples.startswith("step ") and "'Once upon a time' -> Once upon a time" in samples


def _split_scores(model, cfg, split: str, batches: int) -> tuple[float, float]:
    """(exp(token-weighted mean NLL), next-token accuracy) of the bare HF model on the first `batches` batches of
    `split`."""
    tokenizer = load_tokenizer(str(Path(cfg.paths.output_dir) / "hf_model"), "test")
    datamodule = builders.build_datamodule(cfg, tokenizer)
    datamodule.setup("fit")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    nll, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            targets = batch["labels"][:, 1:]
            n = int((targets != -100).sum())
            out = model(**batch)
            nll += out.loss.double().item() * n  # HF's own shifted mean loss, re-weighted by tokens
            correct += int(((out.logits[:, :-1].argmax(-1) == targets) & (targets != -100)).sum())
            tokens += n
    return math.exp(nll / tokens), correct / tokens


def test_reported_ppl_and_token_acc_equal_bare_exported_model(gpt_run) -> None:
    cfg, results = gpt_run
    model = AutoModelForCausalLM.from_pretrained(str(Path(cfg.paths.output_dir) / "hf_model")).eval()
    # One validation (end of the only epoch): val/ppl is that of the best = exported weights.
    assert results["val"]["val/ppl"] == results["val"]["val/ppl_best"]
    for stage, batches in (("val", 3), ("test", 2)):  # ++trainer.limit_val_batches=3, limit_test_batches=2
        ppl, token_acc = _split_scores(model, cfg, stage, batches)
        assert math.isclose(results[stage][f"{stage}/ppl"], ppl, rel_tol=1e-4), stage
        assert results[stage][f"{stage}/token_acc"] == pytest.approx(token_acc, abs=1e-6), stage


def test_llm_generate_on_the_run(gpt_run, compose_cfg, capsys) -> None:
    cfg, results = gpt_run
    outputs = {}
    # The run dir (-> its hf_model/ export of the best weights) and the best checkpoint (+ <run>/tokenizer) agree.
    for path in (cfg.paths.output_dir, results["best_checkpoint"]):
        gen_cfg = compose_cfg([f"model_path={path}", "prompt='The old crow'", "max_new_tokens=12"],
                              config_name="generate")
        outputs[path] = generate(gen_cfg)
        streamed = capsys.readouterr().out
        assert streamed.startswith("The old crow" + outputs[path][0]["generations"][0])
        assert json.loads(Path(gen_cfg.output_file).read_text()) == outputs[path][0]
    assert outputs[cfg.paths.output_dir] == outputs[results["best_checkpoint"]]


def test_next_token_metrics_shift_ignore_and_weight_by_tokens() -> None:
    torch.manual_seed(0)
    metric = NextTokenMetrics()
    batches = [(torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))), (torch.randn(1, 4, 11), torch.randint(0, 11, (1, 4)))]
    batches[0][1][0, 4:] = -100  # padding
    nll, count, correct = 0.0, 0, 0
    for logits, labels in batches:
        metric.update(logits.bfloat16(), labels)
        logits = logits.bfloat16().double()
        for b in range(labels.shape[0]):
            for t in range(labels.shape[1] - 1):
                target = int(labels[b, t + 1])
                if target != -100:
                    nll -= torch.log_softmax(logits[b, t], -1)[target].item()
                    count += 1
                    correct += int(logits[b, t].argmax()) == target
    out = metric.compute()
    assert count == 3 + 5 + 3
    assert math.isclose(out["loss"].item(), nll / count, rel_tol=1e-5)
    assert math.isclose(out["ppl"].item(), math.exp(nll / count), rel_tol=1e-5)
    assert math.isclose(out["token_acc"].item(), correct / count, rel_tol=1e-6)


def test_unigram_perplexity_is_add_one_smoothed() -> None:
    # counts [2, 1, 0] of 3 tokens, vocab 3: p = (c + 1) / 6; targets skip each row's first token.
    ppl = unigram_perplexity([[0, 0, 1]], [[2, 1, 0]], vocab_size=3)
    assert math.isclose(ppl, math.exp(-(math.log(2 / 6) + math.log(3 / 6)) / 2))


def test_block_size_larger_than_context_fails_before_training(run_cli) -> None:
    proc = run_cli("lightning_llm.train", "model=gpt", "data=text_corpus", *TINY_GPT,
                   "model.max_position_embeddings=64", "data.block_size=128", "logger=none")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.block_size=128 is larger than the model's context of 64 tokens "
        "(model.max_position_embeddings): lower data.block_size"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_empty_corpus_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cfg = compose_run_config(tmp_path / "run", [*RUN_OVERRIDES, f"data.train_file={empty}",
                                                 f"data.validation_file={empty}", "data.test_file=null",
                                                 "data.test_split=null", "logger=none"])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [f"error: data.train_file: {empty} has no rows (the train split is empty)"]
    assert "Traceback" not in err
