"""The keys a tracker logs under, and the choice of a run's loss, LR, tokens and settings.

Key lists are in order of preference; the caller can name any key instead (``--loss``,
``--lr``, ``--tokens``, ``--step``). See `lrplan.importers` for the rules.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from typing import Literal

from lrplan.importers.raw import RawRun, as_number, import_error, is_missing, key_list

__all__ = [
    "EVAL_LOSS_KEYS",
    "EVAL_LOSS_PATTERNS",
    "TRAIN_LOSS_KEYS",
    "LR_KEYS",
    "LR_PATTERNS",
    "STEP_KEYS",
    "TOKEN_KEYS",
    "TOKENS_PER_STEP_KEYS",
    "BATCH_KEYS",
    "SEQ_LEN_KEYS",
    "PARAMS_KEYS",
    "PEAK_LR_KEYS",
    "WARMUP_KEYS",
    "LossUnit",
    "is_logged",
    "match_keys",
    "choose_loss",
    "loss_unit_of",
    "run_setting",
]

LossUnit = Literal["nats", "bits", "perplexity"]

#: Loss keys, most preferred first: eval losses, then train losses.
EVAL_LOSS_KEYS = ("eval/loss", "val/loss", "eval_loss", "val_loss", "validation/loss",
                  "valid/loss", "eval/lm_loss", "lm loss validation", "lm_loss_validation",
                  "lm-loss-validation/lm loss", "validation_loss")
EVAL_LOSS_PATTERNS = ("eval/*/CrossEntropyLoss", "eval/*/loss", "val/*/loss")
TRAIN_LOSS_KEYS = ("train/loss", "train/CrossEntropyLoss", "train_loss", "loss", "lm loss",
                   "lm_loss", "train/lm_loss", "training_loss", "lm-loss-training/lm loss")
LR_KEYS = ("lr", "learning_rate", "train/learning_rate", "train/lr", "optim/learning_rate_group0",
           "learning-rate", "optim/lr", "trainer/learning_rate")
LR_PATTERNS = ("lr-*",)  # PyTorch Lightning's LearningRateMonitor
#: Step keys of tables; W&B's own ``_step`` counts log calls, so a trainer's step comes first.
STEP_KEYS = ("iter", "train/global_step", "trainer/global_step", "global_step", "step", "_step")
TOKEN_KEYS = ("throughput/total_tokens", "tokens", "num_input_tokens_seen",
              "train/num_input_tokens_seen", "total_tokens", "consumed_tokens", "consumed-tokens",
              "tokens_seen")
#: Per-run settings: keys of a config (or constant columns / tags of the log).
TOKENS_PER_STEP_KEYS = ("tokens_per_step", "batch_size_in_tokens", "global_batch_size_tokens",
                        "batch_tokens", "tokens_per_iter")
BATCH_KEYS = ("global_batch_size", "global_train_batch_size", "batch-size", "total_batch_size")
SEQ_LEN_KEYS = ("seq_len", "seq_length", "sequence_length", "max_sequence_length", "block_size",
                "max_seq_len", "max_seq_length", "context_length", "encoder_seq_length")
PARAMS_KEYS = ("params", "n_params", "num_params", "non_embedding_params", "num_parameters",
               "n_params_non_embedding", "model/num_params")
PEAK_LR_KEYS = ("peak_lr", "learning_rate_peak", "max_lr", "learning_rate", "lr")
WARMUP_KEYS = ("warmup_steps", "warmup_iters", "lr_warmup_iters", "lr_warmup_steps")

_PERPLEXITY = re.compile(r"(^|[/_\-. ])(ppl|perplexity)($|[/_\-. ])", re.IGNORECASE)
_BITS_PER_BYTE = re.compile(r"(^|[/_\-. ])(bpb|bits_per_byte|bits-per-byte)($|[/_\-. ])", re.IGNORECASE)
_BITS = re.compile(r"(^|[/_\-. ])(bits|bpt|bits_per_token|bpc)($|[/_\-. ])", re.IGNORECASE)


def is_logged(raw: RawRun, key: str) -> bool:
    """Whether the run logs ``key`` with at least one value."""
    s = raw.series.get(key)
    return s is not None and any(not is_missing(v) for v in s.values)


def match_keys(raw: RawRun, keys: Sequence[str], patterns: Sequence[str] = ()) -> list[str]:
    """The first of ``keys`` the run logs, else every logged key matching one of ``patterns``."""
    found = [k for k in keys if is_logged(raw, k)]
    if found:
        return found[:1]
    return sorted(k for k in raw.series for pat in patterns
                  if fnmatch.fnmatchcase(k, pat) and is_logged(raw, k))


def choose_loss(raw: RawRun, loss: str | None) -> tuple[str, str]:
    """The loss key (given, else an eval loss, else a train loss) and its kind."""
    if loss is not None:
        if not is_logged(raw, loss):
            raise import_error(raw.file, loss, raw.name, None, "not logged in this run",
                               f"name a logged key with --loss (logged: {key_list(sorted(raw.series))})")
        kind = "eval" if (loss in EVAL_LOSS_KEYS or any(
            fnmatch.fnmatchcase(loss, p) for p in EVAL_LOSS_PATTERNS)) else "given"
        return loss, kind
    for keys, patterns, kind in ((EVAL_LOSS_KEYS, EVAL_LOSS_PATTERNS, "eval"),
                                 (TRAIN_LOSS_KEYS, (), "train")):
        found = match_keys(raw, keys, patterns)
        if len(found) > 1:
            raise import_error(raw.file, None, raw.name, None,
                               f"{len(found)} {kind} losses are logged ({key_list(found, 6)})",
                               "choose one with --loss")
        if found:
            return found[0], kind
    raise import_error(raw.file, None, raw.name, None,
                       f"no loss key found (looked for "
                       f"{', '.join(EVAL_LOSS_KEYS[:4] + TRAIN_LOSS_KEYS[:4])}, "
                       f"...; logged: {key_list(sorted(raw.series), 8)})", "name the loss key with --loss")


def loss_unit_of(raw: RawRun, key: str, unit: LossUnit) -> LossUnit:
    """The unit of a loss key: ``unit``, unless the key's name says another (then an error)."""
    if _BITS_PER_BYTE.search(key):
        raise import_error(raw.file, key, raw.name, None,
                           "a loss in bits per byte cannot be turned into nats per token without the "
                           "bytes per token", "log or choose a loss in nats/token with --loss")
    named = "perplexity" if _PERPLEXITY.search(key) else ("bits" if _BITS.search(key) else "nats")
    if named != "nats" and unit == "nats":
        raise import_error(raw.file, key, raw.name, None,
                           f"the key's name says {named}, but lrplan fits nats/token",
                           f"give --loss-unit {named} to convert it, or choose another key with --loss")
    return unit


def run_setting(raw: RawRun, keys: Sequence[str],
                logged: Sequence[str] | None = None) -> tuple[str, float] | None:
    """A per-run number > 0 from the config or a logged series that holds one value.

    Config keys match exactly or as the end of a nested key; ``logged`` (default ``keys``)
    names the series to look at.
    """
    for k in keys:
        hits = [c for c in raw.config if c == k or c.endswith("." + k)]
        for c in hits:
            try:
                x = as_number(raw.config[c])
            except (TypeError, ValueError):
                continue
            if math.isfinite(x) and x > 0:
                return f"config {c!r}", x
    for k in keys if logged is None else logged:
        if k in raw.series:
            vals = [v for v in raw.series[k].values if not is_missing(v)]
            try:
                xs = {as_number(v) for v in vals}
            except (TypeError, ValueError):
                continue
            if len(xs) == 1:
                x = xs.pop()
                if math.isfinite(x) and x > 0:
                    return f"logged {k!r}", x
    return None


