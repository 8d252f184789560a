"""Exact log-likelihood of clips of any length, through the streaming engine.

The score of a clip is log p(x) = sum_t log p(x[t] | x[:t]) of its quantized signal after
mono mix-down, resampling to the model's rate and mu-law, with digital silence before
x[0] (README, "Architecture"). No trimming or normalisation: a score is of the clip as given.

Files are read in blocks and fed to the streaming engine in tiles; each layer's context is
carried between tiles, so the total equals ``model.log_prob(x).sum()`` while memory is
bounded by the block and the tile, whatever the length. Sums are accumulated in float64.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .audio import AudioError, float_audio, load_audio, read_blocks, resample, to_mono
from .family import Codec, Scorer, family_of

LN2 = math.log(2)
TILE = 8192  # samples per engine call: big enough for efficient products, small in memory


class StreamScorer:
    """Accumulates log p of a class sequence that arrives in pieces of any size.

    ``add`` feeds the pieces in order; ``log_prob_nats`` and ``num_samples`` grow;
    with ``per_sample`` the surprisal (-log2 p) of every sample is kept too.

    ``labels`` lists the labels to score under (names, entry indices, None = "no label",
    the only choice for an unconditional model): the sequence runs as one row per label of
    one streaming state, and ``row_nats`` holds log p(x | c) for each (``log_prob_nats`` is
    the first). A vocoder's sequence comes with its log-mel ``frames`` (F, n_mels): all of
    them before the first piece, as frames look ahead. An engine call carries ``tile``
    values over all the rows (tile // rows each, at least one).
    """

    def __init__(self, model: nn.Module, tile: int = TILE, per_sample: bool = False,
                 labels: list | tuple = (None,), importance_samples: int = 1,
                 frames: np.ndarray | None = None):
        if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
            raise ValueError(f"tile must be an integer >= 1 (values scored per call; default "
                             f"{TILE}), got {tile!r}")  # 0 scored one value at a time
        self.model = model
        self.device = next(model.parameters()).device
        self.rows = rows = len(labels)
        self.tile = max(1, tile // rows)  # a call's memory grows with all its rows' values
        family = family_of(model)
        self.codec = family.codec(model.config)
        self.engine = family_scorer(model, list(labels), rows, importance_samples,
                                    None if frames is None else [frames] * rows)
        self.row_nats = np.zeros(rows, dtype=np.float64)
        self.tally = _Tally(per_sample)  # the first row's
        self.bound = family.bound

    @property
    def log_prob_nats(self) -> float:
        return float(self.row_nats[0])

    @property
    def num_samples(self) -> int:
        return self.tally.count

    @torch.no_grad()
    def add(self, classes: np.ndarray | torch.Tensor) -> None:
        """classes: (T,) int classes of the next T samples."""
        values = np.asarray(classes, dtype=np.int64)
        for start in range(0, len(values), self.tile):
            piece = values[start : start + self.tile]
            self._take(score_tile(self.engine, [piece] * self.rows, self.codec.silence,
                                  self.device))

    @torch.no_grad()
    def finish(self) -> None:
        """The clip ends here: take what a lagging scorer (a flow's) still holds. Scoring
        more values afterwards starts a new clip."""
        self._take(self.engine.flush())

    def _take(self, logp: torch.Tensor) -> None:
        if logp.numel():
            self.row_nats += logp.sum(1).cpu().numpy()
            self.tally.add(logp[0])

    def add_file(self, path: str | os.PathLike, block_seconds: float = 30.0,
                 on_progress: Any = None) -> None:
        """Feed a whole audio file, read in blocks (AudioError if it cannot be read)."""
        for classes in encoded_blocks(path, self.model.sample_rate, self.codec, block_seconds):
            self.add(classes)
            if on_progress is not None:
                on_progress(len(classes))

    def result(self) -> dict[str, Any]:
        """The record of the clip (``finish`` first, if not yet done)."""
        self.finish()
        return mark_bound(self.tally.record(self.model.sample_rate), self.bound)


def mark_bound(record: dict[str, Any], bound: bool) -> dict[str, Any]:
    """A record of a family whose figures are upper bounds (a flow's) says so."""
    return {**record, "bound": True} if bound else record


def family_scorer(model: nn.Module, labels: Any, rows: int, importance_samples: int = 1,
                  frames: list[np.ndarray] | None = None) -> Scorer:
    """The model's family's scorer of ``rows`` rows under ``labels`` (and a vocoder's
    ``frames``, one (F, n_mels) array per row); ``importance_samples`` noise draws for a
    family whose figures are bounds (ValueError for an exact one)."""
    family = family_of(model)
    condition = family.condition(model, labels, rows, frames)
    if importance_samples == 1:
        return family.scorer(model, condition, rows)
    if not family.bound:
        raise ValueError(f"importance samples tighten a bound; this model's ({family.name}) "
                         f"figures are exact")
    if importance_samples < 1:
        raise ValueError(f"importance_samples must be >= 1, got {importance_samples}")
    return family.scorer(model, condition, rows, draws=importance_samples)


def score_tile(scorer: Scorer, rows: list[np.ndarray | None], silence: int,
               device: torch.device) -> torch.Tensor:
    """One call of a family's scorer: row i's next values are ``rows[i]`` (int64, up to a
    tile; None = an idle row). Shorter rows are padded with ``silence``, which a caller may
    feed only to a row that is reset before it takes real values again. Returns (B, W)
    float64 log p, W the longest row."""
    width = max(len(r) for r in rows if r is not None)
    targets = torch.full((len(rows), width), silence, dtype=torch.long)
    for i, values in enumerate(rows):
        if values is not None:
            targets[i, : len(values)] = torch.from_numpy(values)
    return scorer.log_prob(targets.to(device))


class _Tally:
    """The running score of one sequence: nats, count and (``per_sample``) surprisal."""

    def __init__(self, per_sample: bool):
        self.per_sample = per_sample
        self.nats, self.count = 0.0, 0
        self.surprisal: list[np.ndarray] = []

    def add(self, logp: torch.Tensor) -> None:
        """logp: (T,) float64 log p of the next T values."""
        self.nats += float(logp.sum())
        self.count += logp.shape[0]
        if self.per_sample:
            self.surprisal.append((-logp / LN2).float().cpu().numpy())

    def record(self, sample_rate: int) -> dict[str, Any]:
        """The score fields (RECORD_FIELDS), with "surprisal" (T,) float32 bits when kept."""
        out = _record(self.nats, self.count, sample_rate)
        if self.per_sample:
            out["surprisal"] = (np.concatenate(self.surprisal) if self.surprisal
                                else np.zeros(0, np.float32))
        return out


# The fields of a file's score record, in the order of the CSV columns: `path` and
# (conditional models) `label` come before them, `error` replaces them for a failed file.
RECORD_FIELDS = ["sample_rate", "num_samples", "seconds", "log_prob_nats", "bits_per_sample",
                 "bits_per_second"]


def _record(nats: float, count: int, sample_rate: int) -> dict[str, Any]:
    """The score fields (RECORD_FIELDS) of one clip or of an aggregate."""
    bits = -nats / LN2 / count if count else float("nan")
    return {"sample_rate": sample_rate, "num_samples": count, "seconds": count / sample_rate,
            "log_prob_nats": nats, "bits_per_sample": bits, "bits_per_second": bits * sample_rate}


def log_prob_classes(model: nn.Module, classes: np.ndarray | torch.Tensor,
                     tile: int = TILE, label: str | int | None = None) -> float:
    """Total log p(x | label) in nats of one (T,) class sequence, silence before x[0]."""
    scorer = StreamScorer(model, tile, labels=[label])
    scorer.add(classes)
    scorer.finish()
    return scorer.log_prob_nats


def bits_per_sample(model: nn.Module, clips: list[np.ndarray], max_samples: int | None = None,
                    tile: int = TILE, labels: list | None = None) -> float:
    """Exact bits/sample over clips (each scored from its start, up to max_samples), each
    under its label in ``labels`` (conditional models; None = "no label")."""
    return aggregate(clip_records(model, clips, max_samples, tile, labels))["bits_per_sample"]


def clip_records(model: nn.Module, clips: list[np.ndarray], max_samples: int | None = None,
                 tile: int = TILE, labels: list | None = None,
                 frames: list[np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The score record (RECORD_FIELDS) of each stored-value clip, scored from its start up
    to max_samples, under its label in ``labels`` (None = "no label") and a vocoder's
    ``frames`` (one (F, n_mels) array per clip)."""
    records = []
    for i, values in enumerate(clips):
        scorer = StreamScorer(model, tile, labels=[labels[i] if labels is not None else None],
                              frames=None if frames is None else frames[i])
        scorer.add(values[:max_samples] if max_samples else values)
        records.append(scorer.result())
    return records


def score_audio(model: nn.Module, audio: np.ndarray, sample_rate: int, per_sample: bool = False,
                tile: int = TILE, label: str | int | None = None,
                importance_samples: int = 1) -> dict[str, Any]:
    """Score float audio: (T,) mono or (T, C) channels-last, in [-1, 1], at ``sample_rate``.

    Returns the record of ``score_file`` without ``path`` (``surprisal`` (T',) float32 in
    bits with ``per_sample``).
    """
    audio = float_audio(audio, "score_audio", ", or use score_file")
    if audio.ndim not in (1, 2):
        raise ValueError(f"score_audio expects (T,) mono or (T, C) channels-last audio, got "
                         f"shape {audio.shape}")
    if audio.ndim == 2 and audio.shape[1] > audio.shape[0]:
        raise ValueError(f"score_audio expects (T,) mono or (T, C) channels-last audio; shape "
                         f"{audio.shape} has more channels than samples: channels-first (C, "
                         f"T) audio, as torchaudio.load returns it? Pass its transpose")
    mono = to_mono(audio.astype(np.float32, copy=False))
    if sample_rate < 1:
        raise ValueError(f"score_audio: sample_rate must be >= 1, got {sample_rate}")
    mono = resample(np.clip(mono, -1.0, 1.0), sample_rate, model.sample_rate)
    if mono.size == 0:
        raise ValueError(f"score_audio: {audio.shape[0]} samples at {sample_rate} Hz leave no "
                         f"sample at the model's rate ({model.sample_rate} Hz): nothing to "
                         f"score")
    scorer = StreamScorer(model, tile, per_sample, [label], importance_samples,
                          clip_frames(model, mono))
    scorer.add(scorer.codec.encode(np.ascontiguousarray(mono)))
    return scorer.result()


def clip_frames(model: nn.Module, audio: np.ndarray) -> np.ndarray | None:
    """A vocoder's log-mel frames of (T,) float audio at its rate, with the settings it was
    trained with (``model.config.features``); None for other models."""
    if model.config.features is None:
        return None
    from .features import MelSettings, log_mel

    return log_mel(audio, model.sample_rate, MelSettings.from_config(model.config.features))


def score_file(model: nn.Module, path: str | os.PathLike, per_sample: bool = False,
               tile: int = TILE, block_seconds: float = 30.0,
               on_progress: Any = None, label: str | int | None = None,
               importance_samples: int = 1) -> dict[str, Any]:
    """Exact log-likelihood of an audio file, read in blocks (any length, bounded memory);
    for a flow, the dequantization bound ("bound": True), estimated with
    ``importance_samples`` noise draws (more: a tighter bound).

    For a conditional model, ``label`` picks p(x | label); None scores with the "no label"
    entry (the unconditional p(x) learnt by label dropout).

    Returns:
        {"path", "sample_rate", "num_samples", "seconds", "log_prob_nats",
        "bits_per_sample", "bits_per_second"} (+ "surprisal": (T,) float32 bits per sample
        with ``per_sample``). ``sample_rate`` and ``num_samples`` are the model's rate and
        the length after resampling to it.

    Raises:
        AudioError: the file cannot be read.
    """
    if model.config.features is not None:  # a vocoder's frames look ahead: the whole clip
        audio = load_audio(path, model.sample_rate)
        record = score_audio(model, audio, model.sample_rate, per_sample, tile, label,
                             importance_samples)
        if on_progress is not None:
            on_progress(len(audio))
        return {"path": str(path), **record}
    scorer = StreamScorer(model, tile, per_sample, [label], importance_samples)
    scorer.add_file(path, block_seconds, on_progress)
    return {"path": str(path), **scorer.result()}


def encoded_blocks(path: str | os.PathLike, sample_rate: int, codec: Codec,
                   block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """A file's stored values, (T,) int64 blocks of about ``block_seconds`` at
    ``sample_rate`` (``audio.read_blocks``: mono, resampled; AudioError if unreadable)."""
    for block in read_blocks(path, sample_rate, block_seconds):
        yield codec.encode(block).numpy()


def score_files(model: nn.Module, paths: Iterable[str | os.PathLike], per_sample: bool = False,
                on_progress: Any = None, batch: int = 4, tile: int = TILE,
                block_seconds: float = 30.0, label: str | int | None = None,
                importance_samples: int = 1) -> Iterator[dict[str, Any]]:
    """Score many files, yielding records in input order.

    Up to ``batch`` files are scored side by side, one row each of one streaming state, so
    every engine call carries ``batch`` tiles (throughput on a GPU, and on a CPU for short
    files). A row whose file ends is reset to the silence state before the next file takes
    it. A file that cannot be read gives {"path", "error"}; the others go on. ``label`` and
    ``importance_samples`` as in ``score_file``, the same for every file.

    A row gets fewer values than the tile only when its file ends there (a slot buffers a
    whole tile until then), and the row is reset before it takes the next file, so the
    padding fed after a file's end never reaches a score.
    """
    if model.config.features is not None:  # each file with its own frames, in turn
        for path in map(str, paths):
            try:
                yield score_file(model, path, per_sample, tile, block_seconds, on_progress,
                                 label, importance_samples)
            except AudioError as err:
                yield {"path": path, "error": err.cause}
        return
    device = next(model.parameters()).device
    family = family_of(model)
    codec = family.codec(model.config)
    batch = batch if family.autoregressive else 1  # a lagging scorer restarts all rows
    scorer = family_scorer(model, label, batch, importance_samples)
    slots: list[_Slot | None] = [None] * batch
    pending = iter(enumerate(map(str, paths)))
    done: dict[int, dict[str, Any]] = {}
    next_out = 0

    def fill(row: int) -> None:
        for index, path in pending:
            slot = _Slot(index, path, encoded_blocks(path, model.sample_rate, codec,
                                                     block_seconds), per_sample)
            try:
                slot.refill(tile)
            except AudioError as err:
                done[index] = {"path": path, "error": err.cause}
                continue
            scorer.reset(row)
            slots[row] = slot
            return
        slots[row] = None

    for row in range(batch):
        fill(row)
    with torch.no_grad():
        while any(slots):
            pieces = [s.buffer[:tile] if s else None for s in slots]
            logp = score_tile(scorer, pieces, codec.silence, device)  # (B, T) float64
            for row, (slot, piece) in enumerate(zip(slots, pieces, strict=True)):
                if slot is None:
                    continue
                n = len(piece)
                slot.tally.add(logp[row] if scorer.lags else logp[row, :n])  # lags: batch 1
                slot.buffer = slot.buffer[n:]
                if on_progress is not None:
                    on_progress(n)
                try:
                    slot.refill(tile)
                    finished = len(slot.buffer) == 0
                    if finished:
                        rest = scorer.flush()  # (batch 1 when it holds anything)
                        if rest.numel():
                            slot.tally.add(rest[row])
                    record = ({"path": slot.path, **mark_bound(
                        slot.tally.record(model.sample_rate), family.bound)}
                        if finished else None)
                except AudioError as err:
                    finished, record = True, {"path": slot.path, "error": err.cause}
                if finished:
                    done[slot.index] = record
                    fill(row)
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    while next_out in done:  # files that failed after the last one scored
        yield done.pop(next_out)
        next_out += 1


class _Slot:
    """One file being scored in a row of ``score_files``."""

    def __init__(self, index: int, path: str, blocks: Iterator[np.ndarray], per_sample: bool):
        self.index, self.path, self.blocks = index, path, blocks
        self.buffer = np.zeros(0, dtype=np.int64)
        self.exhausted = False
        self.tally = _Tally(per_sample)

    def refill(self, tile: int) -> None:
        """Read blocks until a whole tile is buffered or the file ends (AudioError)."""
        while not self.exhausted and len(self.buffer) < tile:
            classes = next(self.blocks, None)
            if classes is None:
                self.exhausted = True
            else:
                self.buffer = np.concatenate((self.buffer, classes))


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Length-weighted totals over the records that were scored."""
    ok = [r for r in records if "error" not in r]
    sample_rate = ok[0]["sample_rate"] if ok else 1
    return mark_bound({"files": len(ok), "failed": len(records) - len(ok),
                       **_record(sum(r["log_prob_nats"] for r in ok),
                                 sum(r["num_samples"] for r in ok), sample_rate)},
                      any(r.get("bound") for r in ok))
