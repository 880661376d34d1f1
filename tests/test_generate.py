"""`llm-generate`: token-identical to transformers' generate, batching-invariant, JSONL out, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_llm.callbacks import GenerationSamples
from lightning_llm.generate import generate, generation_config, load_for_generation
from lightning_llm.modules.generation import generate_ids
from lightning_llm.runtime.cli import run_or_exit
from tests.conftest import tiny_gpt_dir

PROMPTS = ["The clever crow", "It ate", "Then the old goat met a hungry owl, and the owl"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 with a BPE tokenizer trained on the bundled corpus, saved as an HF model dir."""
    return tiny_gpt_dir(tmp_path_factory.mktemp("tiny_gpt"), corpus_lines=500)


def _cfg(compose_cfg, hf_dir: Path, *overrides: str):
    return compose_cfg([f"model_path={hf_dir}", *overrides], config_name="generate")


def test_greedy_is_token_identical_to_hf_generate(compose_cfg, hf_dir: Path) -> None:
    cfg = _cfg(compose_cfg, hf_dir, "prompt=x", "max_new_tokens=20")
    model, tokenizer = load_for_generation(str(hf_dir))
    config = generation_config(model, cfg, tokenizer.pad_token_id)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        reference = model.generate(ids, max_new_tokens=20, do_sample=False, num_beams=1,
                                   pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        assert generate_ids(model, [ids[0].tolist()], config) == [[reference]]


def test_batched_left_padded_greedy_equals_one_by_one(compose_cfg, hf_dir: Path) -> None:
    cfg = _cfg(compose_cfg, hf_dir, "prompt=x", "max_new_tokens=20")
    model, tokenizer = load_for_generation(str(hf_dir))
    config = generation_config(model, cfg, tokenizer.pad_token_id)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(ids) for ids in prompt_ids}) == len(PROMPTS)  # really padded
    one_by_one = [generate_ids(model, [ids], config)[0] for ids in prompt_ids]
    assert generate_ids(model, prompt_ids, config, batch_size=len(PROMPTS)) == one_by_one


def test_cli_prints_and_writes_jsonl_like_hf(run_cli, hf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc = run_cli("lightning_llm.generate", f"model_path={hf_dir}", f"prompt='{PROMPTS[0]}'", "max_new_tokens=15",
                   f"output_file={out}")
    assert proc.returncode == 0, proc.stderr
    model, tokenizer = load_for_generation(str(hf_dir))
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    new = model.generate(ids, max_new_tokens=15, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert PROMPTS[0] + text in proc.stdout  # streamed
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"prompt": PROMPTS[0], "generations": [text]}]


def test_prompts_file_sampling_jsonl(compose_cfg, hf_dir: Path, tmp_path: Path) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n\n")
    out = tmp_path / "out.jsonl"
    overrides = [f"prompts_file={prompts_file}", "do_sample=true", "temperature=0.8", "top_k=20", "top_p=0.9",
                 "num_return_sequences=2", "max_new_tokens=8", "batch_size=2", f"output_file={out}"]
    records = generate(_cfg(compose_cfg, hf_dir, *overrides))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == records
    assert [r["prompt"] for r in lines] == PROMPTS
    assert all(set(r) == {"prompt", "generations"} and len(r["generations"]) == 2 for r in lines)
    assert generate(_cfg(compose_cfg, hf_dir, *overrides)) == records  # seeded


def test_beam_search_returns_num_return_sequences(compose_cfg, hf_dir: Path) -> None:
    records = generate(_cfg(compose_cfg, hf_dir, "prompt='It ate'", "num_beams=3", "num_return_sequences=2",
                            "max_new_tokens=6", "repetition_penalty=1.3", "output_file=null"))
    assert len(records[0]["generations"]) == 2


@pytest.mark.parametrize("overrides, message", [
    (["top_p=0"], "top_p must be in (0, 1], got 0"),
    (["top_p=1.5"], "top_p must be in (0, 1], got 1.5"),
    (["do_sample=true", "temperature=0"], "temperature must be > 0 when sampling"),
    (["num_return_sequences=2"], "num_return_sequences=2 needs do_sample=true or num_beams >= 2"),
    (["prompt=null"], "prompt / prompts_file / messages_file: give exactly one of them"),
    (["prompt='" + "the crow " * 40 + "'"], "exceed the model's context of 64 tokens"),
    (["model_path=/no/such/run/checkpoints/best.ckpt"], "model_path: not found: /no/such/run/checkpoints/best.ckpt"),
    (["model_path=./missing_run"], "model_path: not found: ./missing_run"),
])
def test_bad_input_is_one_line_exit_2(compose_cfg, hf_dir: Path, capsys, overrides, message) -> None:
    cfg = _cfg(compose_cfg, hf_dir, "prompt='The crow'", *overrides)
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(generate, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "Traceback" not in "".join(err)


def test_generation_samples_callback_leaves_rng_alone(hf_dir: Path) -> None:
    model, tokenizer = load_for_generation(str(hf_dir))
    model.train()
    state = torch.get_rng_state()
    samples = GenerationSamples(prompts=PROMPTS[:2], max_new_tokens=5).generate(model, tokenizer)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training
    assert [p for p, _ in samples] == PROMPTS[:2] and all(c for _, c in samples)
