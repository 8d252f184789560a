"""Classification by likelihood with a conditional model: p(c | x) ∝ p(x | c) p(c).

Each file is scored under every label at once (one row per label of one streaming state,
so the file is read once), exactly as ``wavegen score --label`` would score it under each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .paths import expand_lists, expand_paths
from .scoring import TILE, StreamScorer, _record


def prior_weights(model: nn.Module, uniform: bool = False) -> np.ndarray:
    """p(c) over ``model.labels``: the training label shares stored in the checkpoint
    (uniform when asked, or when the model carries none)."""
    k = len(model.labels)
    if uniform or not model.label_prior:
        return np.full(k, 1.0 / k)
    prior = np.asarray(model.label_prior, dtype=np.float64)
    return prior / prior.sum()


def classify_file(model: nn.Module, path: str | os.PathLike, prior: np.ndarray | None = None,
                  tile: int = TILE, block_seconds: float = 30.0,
                  on_progress: Any = None) -> dict[str, Any]:
    """Score a file under every label and classify it by Bayes' rule.

    Returns:
        {"path", "sample_rate", "num_samples", "seconds", "labels": {label:
        {"log_prob_nats", "bits_per_sample", "posterior"}}, "predicted", "runner_up",
        "log_likelihood_ratio"}: the ratio is log p(x | predicted) - log p(x | runner-up)
        in nats (the runner-up is the label with the second highest posterior).

    Raises:
        ValueError: the model is unconditional. AudioError: the file cannot be read.
    """
    if not model.conditional:
        raise ValueError("classification needs a conditional model (trained with data.labels)")
    names = model.labels
    prior = prior_weights(model) if prior is None else np.asarray(prior, dtype=np.float64)
    scorer = StreamScorer(model, tile, labels=names)
    scorer.add_file(path, block_seconds, on_progress)
    scorer.finish()
    nats = scorer.row_nats
    with np.errstate(divide="ignore"):
        joint = nats + np.log(prior)
    posterior = np.exp(joint - joint.max())
    posterior /= posterior.sum()
    order = np.argsort(-joint, kind="stable")
    best = int(order[0])
    second = int(order[1]) if len(order) > 1 else best
    count, rate = scorer.num_samples, model.sample_rate
    labels = {name: {"log_prob_nats": float(nats[i]),
                     "bits_per_sample": _record(float(nats[i]), count, rate)["bits_per_sample"],
                     "posterior": float(posterior[i])}
              for i, name in enumerate(names)}
    return {"path": str(path), "sample_rate": rate, "num_samples": count,
            "seconds": count / rate, "labels": labels, "predicted": names[best],
            "runner_up": names[second],
            "log_likelihood_ratio": float(nats[best] - nats[second])}


def labelled_paths(arguments: list[str], known: list[str],
                   outputs: list[Path] | None = None) -> list[tuple[Path, str | None]]:
    """Files to classify, each with its true label when the layout says it: a file found
    below a folder argument is labelled by its first sub-folder there, or by the folder's
    own name; a file argument by the name of the folder it is in; when that name is one
    of ``known``. Folders of wavegen's own output below a folder argument are left out
    (as ``expand_paths`` does; appended to ``outputs`` when given)."""
    out = []
    left_out = [] if outputs is None else outputs
    for argument in expand_lists(arguments):
        root = Path(argument)
        for path in expand_paths([root], left_out):
            truth = None
            if not root.is_dir():
                parent = path.resolve().parent.name
                truth = parent if parent in known else None
            else:
                parts = path.relative_to(root).parts
                if len(parts) > 1 and parts[0] in known:
                    truth = parts[0]
                elif root.resolve().name in known:
                    truth = root.resolve().name
            out.append((path, truth))
    return out


def confusion(records: list[dict[str, Any]], names: list[str]) -> tuple[np.ndarray, int]:
    """(true x predicted counts over ``names``, files with a true label)."""
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for r in records:
        if r.get("true_label") is not None and "predicted" in r:
            matrix[names.index(r["true_label"]), names.index(r["predicted"])] += 1
    return matrix, int(matrix.sum())


def csv_fields(names: list[str]) -> list[str]:
    """The CSV columns of classification records: per label a bits_per_sample:<label> and a
    posterior:<label> column."""
    fields = ["path", "true_label", "predicted", "runner_up", "log_likelihood_ratio",
              "num_samples", "seconds"]
    fields += [f"{k}:{n}" for n in names for k in ("bits_per_sample", "posterior")]
    return fields + ["error"]


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A classification record as a CSV row (``csv_fields``)."""
    row = {k: v for k, v in record.items() if k != "labels"}
    for name, v in record.get("labels", {}).items():
        row[f"bits_per_sample:{name}"] = v["bits_per_sample"]
        row[f"posterior:{name}"] = v["posterior"]
    return row
