"""Ray, as kdbench uses it: the driver's connection and the setup of every worker process."""

from __future__ import annotations

import logging
import os

# Environment of every Ray worker: quiet libraries, no tokenizer thread fights, no hub calls
# for the synthetic tasks (real models by id still load from the local HF cache).
WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "0",
}


def init_ray(address: str | None) -> None:
    """Connect the driver: to ``address`` (or ``$RAY_ADDRESS``), else a private local instance."""
    import ray

    if ray.is_initialized():
        return
    ray.init(
        # no address: a private local instance, never a cluster someone else started on this
        # machine (Ray's own default would join it); "auto" joins that one on purpose
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=True,
        runtime_env={"env_vars": WORKER_ENV},
        configure_logging=True,
    )


def worker_setup(cpus: float) -> None:
    """Per-process setup of a Ray worker: threads, quiet logs, DeepSpeed's accelerator."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name in ("DeepSpeed", "lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
