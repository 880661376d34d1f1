"""Token and word attributions with Captum's integrated gradients on the input embedding layer.

Classifiers: `LayerIntegratedGradients` of the target class probability, from a baseline of [PAD] ids that keeps
the special tokens ([CLS], [SEP]) in place, with Captum's convergence delta (sum of attributions minus
f(x) - f(baseline)). Causal LMs: Captum's `LLMGradientAttribution` (the same integrated gradients) of the log
probability of each continuation token, summed over the continuation; the delta is computed the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from lightning_llm.errors import UserError, require
from lightning_llm.runtime.extras import require_extra


def _captum_attr() -> Any:
    return require_extra("captum.attr", "explain", "llm-explain")


def baseline_ids(input_ids: torch.Tensor, special_mask: torch.Tensor, baseline_id: int) -> torch.Tensor:
    """`input_ids` with every non-special token replaced by `baseline_id` ([PAD])."""
    return torch.where(special_mask.bool(), input_ids, torch.full_like(input_ids, baseline_id))


def word_spans(tokenizer: Any, text: str, **encode: Any) -> list[tuple[str, list[int]]]:
    """(word, its token positions) in text order, from a fast tokenizer's `word_ids()` and offsets; a slow
    tokenizer (no word ids) makes every non-special token its own word."""
    if not tokenizer.is_fast:
        encoding = tokenizer(text, return_special_tokens_mask=True, **encode)
        tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
        return [(t, [i]) for i, (t, s) in enumerate(zip(tokens, encoding["special_tokens_mask"])) if not s]
    encoding = tokenizer(text, return_offsets_mapping=True, **encode)
    offsets, spans = encoding["offset_mapping"], {}
    for position, word in enumerate(encoding.word_ids()):
        if word is not None:
            spans.setdefault(word, []).append(position)
    return [(text[offsets[ps[0]][0]:offsets[ps[-1]][1]].strip(), ps) for ps in spans.values()]


def _record(text: str, tokens: list[str], scores: torch.Tensor, words: list[tuple[str, list[int]]],
            **fields: Any) -> dict[str, Any]:
    values = scores.tolist()
    return {"text": text, "tokens": tokens, "scores": values, "words": [w for w, _ in words],
            "word_scores": [sum(values[i] for i in positions) for _, positions in words], **fields}


# ------------------------------------------------------------------------------------------------ classifiers
def class_index(model: PreTrainedModel, target: str | int | None) -> int | None:
    """`target=` as a class index: a label name of the model's `id2label`, or an id; None = the predicted one."""
    if target is None:
        return None
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    by_name = {v: k for k, v in id2label.items()}
    if str(target) in by_name:
        return by_name[str(target)]
    try:
        index = int(target)
    except ValueError:
        raise UserError(f"target: {target!r} is not a label of the model ({', '.join(by_name)}) nor a label id")
    require(0 <= index < model.config.num_labels,
            f"target: label id {index} is outside the model's {model.config.num_labels} labels")
    return index


def _outputs(model: PreTrainedModel) -> Any:
    """How the model's `problem_type` reads its logits: softmax probabilities (single-label), per-label sigmoid
    probabilities (multi-label), or the predicted number itself (regression, one output)."""
    kind = getattr(model.config, "problem_type", None)
    if kind == "multi_label_classification":
        return torch.sigmoid
    if kind == "regression":
        return lambda logits: logits
    return lambda logits: logits.softmax(-1)


def explain_classification(model: PreTrainedModel, tokenizer: Any, text: str, target: int | None,
                           n_steps: int, internal_batch_size: int | None, max_length: int | None) -> dict[str, Any]:
    """Attributions of one text to the probability of class `target` (None: the predicted class): the softmax
    probability, a multi-label model's sigmoid probability of that label, or a regression model's output (its
    `probability` fields then hold that number, `value` too)."""
    captum_attr = _captum_attr()
    truncate = {"truncation": True, "max_length": max_length}
    encoding = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True, **truncate)
    input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
    extra = {"token_type_ids": encoding["token_type_ids"]} if "token_type_ids" in encoding else {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    baseline = baseline_ids(input_ids, encoding["special_tokens_mask"], pad_id)

    read = _outputs(model)

    def probabilities(ids: torch.Tensor, mask: torch.Tensor, *token_types: torch.Tensor) -> torch.Tensor:
        kwargs = {"token_type_ids": token_types[0]} if token_types else {}
        return read(model(input_ids=ids, attention_mask=mask, **kwargs).logits)

    forward_args = (attention_mask, *extra.values())
    with torch.no_grad():
        probs = probabilities(input_ids, *forward_args)[0]
        baseline_probs = probabilities(baseline, *forward_args)[0]
    predicted = int(probs.argmax())
    target = predicted if target is None else target
    lig = captum_attr.LayerIntegratedGradients(probabilities, model.get_input_embeddings())
    attributions, delta = lig.attribute(inputs=input_ids, baselines=baseline, target=target,
                                        additional_forward_args=forward_args, n_steps=n_steps,
                                        internal_batch_size=internal_batch_size, return_convergence_delta=True)
    scores = attributions.sum(-1)[0].detach()
    labels = model.config.id2label or {}
    return _record(text, tokenizer.convert_ids_to_tokens(input_ids[0].tolist()), scores,
                   word_spans(tokenizer, text, **truncate),
                   kind="label", predicted_label=str(labels.get(predicted, predicted)),
                   predicted_id=predicted, probability=float(probs[predicted]),
                   target_label=str(labels.get(target, target)), target_id=target,
                   target_probability=float(probs[target]), baseline_probability=float(baseline_probs[target]),
                   delta=float(delta.item()), n_steps=n_steps,
                   **({"value": float(probs[0])} if getattr(model.config, "problem_type", None) == "regression"
                      else {}))


# ------------------------------------------------------------------------------------------------ causal LMs
def _continuation_log_prob(model: PreTrainedModel, prompt_ids: torch.Tensor, target_ids: torch.Tensor) -> float:
    ids = torch.cat([prompt_ids, target_ids.unsqueeze(0)], dim=1)
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits[0, prompt_ids.shape[1] - 1:-1].log_softmax(-1)
    return float(log_probs.gather(1, target_ids.unsqueeze(1)).sum())


def explain_causal(model: PreTrainedModel, tokenizer: Any, text: str, target_text: str | None,
                   n_steps: int, internal_batch_size: int | None) -> dict[str, Any]:
    """Attributions of the prompt tokens to log P(continuation | prompt); the continuation is `target_text`, else
    the model's most likely next token."""
    captum_attr = _captum_attr()
    special = list(tokenizer.all_special_ids)
    baseline_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inp = captum_attr.TextTokenInput(text, tokenizer, baselines=baseline_id, skip_tokens=special or None)
    prompt_ids = inp.to_model_input()
    require(inp.n_itp_features > 0, f"text: {text!r} has no tokens to attribute")
    if target_text:
        target_ids = torch.tensor(tokenizer.encode(target_text, add_special_tokens=False))
        require(target_ids.numel() > 0, f"target_text: {target_text!r} encodes to no tokens")
    else:
        with torch.no_grad():
            target_ids = model(input_ids=prompt_ids).logits[0, -1].argmax().reshape(1)
    lig = captum_attr.LayerIntegratedGradients(model, model.get_input_embeddings())
    result = captum_attr.LLMGradientAttribution(lig, tokenizer).attribute(
        inp, target=target_ids, n_steps=n_steps, internal_batch_size=internal_batch_size)
    scores = result.seq_attr.detach().cpu()
    log_prob = _continuation_log_prob(model, prompt_ids, target_ids)
    baseline = inp.to_model_input(torch.zeros_like(inp.to_tensor()))
    baseline_log_prob = _continuation_log_prob(model, baseline, target_ids)
    # Word scores over the interpretable (non-special) tokens, numbered as TextTokenInput keeps them.
    kept = {p: k for k, p in enumerate(i for i, t in enumerate(prompt_ids[0].tolist()) if t not in set(special))}
    if tokenizer(text)["input_ids"] == prompt_ids[0].tolist():
        words = [(w, [kept[p] for p in ps if p in kept]) for w, ps in word_spans(tokenizer, text)]
        words = [(w, ps) for w, ps in words if ps]
    else:
        words = [(token, [k]) for k, token in enumerate(inp.values)]
    target_tokens = tokenizer.convert_ids_to_tokens(target_ids.tolist())
    return _record(text, list(inp.values), scores, words, kind="continuation",
                   target_text=tokenizer.decode(target_ids), target_tokens=target_tokens,
                   token_scores_per_target=result.token_attr.detach().cpu().tolist(),
                   probability=float(torch.tensor(log_prob).exp()), log_probability=log_prob,
                   baseline_log_probability=baseline_log_prob,
                   delta=float(scores.sum()) - (log_prob - baseline_log_prob), n_steps=n_steps)
