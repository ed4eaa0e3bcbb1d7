"""Measured costs of a job: inference speed of a model and peak memory of a process, plus the
analytic FLOPs of training and inference.

FLOPs follow Kaplan et al. (2020), "Scaling Laws for Neural Language Models", section 2.1:
a forward pass costs ``2 N`` FLOPs per token for ``N`` non-embedding-dominated parameters, a
training step (forward + backward) ``6 N`` per token. Attention's ``T^2`` term is left out: at
the sequence lengths of these suites it is a few percent.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch


def train_flops(params: int, tokens: int) -> float:
    """``6 N D``: a training pass over ``D`` tokens of a model with ``N`` parameters."""
    return 6.0 * params * tokens


def forward_flops(params: int, tokens: int) -> float:
    """``2 N D``: a forward pass (teacher signals, generation) over ``D`` tokens."""
    return 2.0 * params * tokens


@torch.no_grad()
def inference_speed(
    model: Any, tokenizer: Any, prompts: list[str], new_tokens: int = 16, batch_size: int = 32
) -> dict[str, float]:
    """Greedy decoding speed on this machine: ``infer_tokens_per_s``, new tokens per second
    with ``batch_size`` prompts per call (throughput), and ``infer_latency_ms``, milliseconds to
    answer one prompt alone (``new_tokens`` tokens at batch size 1). Every call generates
    exactly ``new_tokens`` tokens, so student and teacher are timed on the same work."""
    model.eval()
    device = next(model.parameters()).device
    kw = {
        "do_sample": False,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(
            prompts[:batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        model.generate(**batch, **kw)  # warm-up
        start = time.perf_counter()
        out = model.generate(**batch, **kw)
        throughput = (out.shape[0] * new_tokens) / (time.perf_counter() - start)
        singles = prompts[:4]
        start = time.perf_counter()
        for prompt in singles:
            one = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(device)
            model.generate(**one, **kw)
        latency = (time.perf_counter() - start) / len(singles) * 1000
    finally:
        tokenizer.padding_side = old_side
    return {"infer_tokens_per_s": throughput, "infer_latency_ms": latency}


class PeakMemory:
    """Peak memory (MiB) of this process while the block runs, sampled every ``interval``
    seconds (the process's own ``ru_maxrss`` would carry over from earlier jobs of a reused Ray
    worker): ``peak_mb``, resident set size; ``peak_private_mb``, its anonymous part, i.e.
    without file pages such as the memory-mapped signal cache, which belong to the OS page cache
    and are shared by every job reading the same entry. On a GPU, the device's peak allocation
    is reported as well (``gpu_peak_mb``)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_mb, self.peak_private_mb = interval, 0.0, 0.0
        self.gpu_peak_mb: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        info = psutil.Process(os.getpid()).memory_info()
        self.peak_mb = max(self.peak_mb, info.rss / 2**20)
        self.peak_private_mb = max(self.peak_private_mb, (info.rss - info.shared) / 2**20)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if torch.cuda.is_available():
            self.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
