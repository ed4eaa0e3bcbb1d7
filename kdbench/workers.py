"""Ray, as kdbench uses it: the driver's connection and the setup of every worker process."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket

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


PROBE_TIMEOUT_S = 5.0
"""How long :func:`check_address` waits for a cluster's port to answer before giving up."""
CONNECT_BOUNDS = {"RAY_py_gcs_connect_timeout_s": "5", "RAY_gcs_server_port_wait_time_s": "1"}
"""Ray's own bounds on reaching a cluster's GCS once its port answered the probe (unless the
environment sets them): one connection attempt of a few seconds instead of Ray's default 20
attempts of 35 s each, so a port that answers but is no Ray GCS fails in about 15 s (after
three warning lines of Ray's own)."""

_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_FORM = "'auto', 'local', HOST:PORT (a cluster's GCS, e.g. 10.0.0.5:6379) or ray://HOST:PORT"


class ClusterError(Exception):
    """A Ray address that is malformed, or a cluster that cannot be reached: one line."""


def parse_address(address: str, source: str = "--address") -> tuple[str, int] | None:
    """The (host, port) that ``address`` names, or None for ``auto`` and ``local`` (which Ray
    resolves itself). Raises :class:`ClusterError` naming ``source`` for any other form."""
    if address in ("auto", "local"):
        return None
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [IPv6]:PORT
    try:
        ipaddress.ip_address(host)
        valid_host = True
    except ValueError:
        valid_host = bool(_HOST.match(host))
    if not (sep and valid_host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        shown = repr(address) if len(address) <= 80 else repr(address[:80]) + "..."
        raise ClusterError(f"{source} {shown}: not a Ray address; use {_FORM}")
    return host, int(port)


def check_address(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check before Ray starts that ``address`` (or ``$RAY_ADDRESS``) has a Ray form and, for
    HOST:PORT, that something listens there (a TCP connect within ``timeout`` seconds).
    Raises :class:`ClusterError` with one line. None (a private local instance) passes."""
    source = "--address"
    if not address and os.environ.get("RAY_ADDRESS"):
        address, source = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    if not address:
        return
    target = parse_address(address, source)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except TimeoutError:
        why = f"no answer within {timeout:.0f}s"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    else:
        return
    raise ClusterError(
        f"{source} {address}: no Ray cluster reachable there ({why}); start one with "
        "`ray start --head` on that machine, or drop --address for a private local instance"
    )


def bound_connect(address: str | None) -> None:
    """Set :data:`CONNECT_BOUNDS` (unless the environment sets them) when ``address`` (or
    ``$RAY_ADDRESS``) names a cluster; Ray reads them when it is imported, so call this first."""
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    if target != "local":  # a port that answers the probe but is no GCS: one bounded try
        for key, value in CONNECT_BOUNDS.items():
            os.environ.setdefault(key, value)


def init_ray(address: str | None) -> None:
    """Connect the driver: to ``address`` (or ``$RAY_ADDRESS``), else a private local instance.

    A malformed or unreachable address raises :class:`ClusterError` (one line): within
    :data:`PROBE_TIMEOUT_S` seconds when nothing listens, within about 20 s (see
    :data:`CONNECT_BOUNDS`) when something listens that is not a Ray cluster, instead of Ray's
    minutes."""
    import ray

    if ray.is_initialized():
        return
    check_address(address)
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    bound_connect(target)
    try:
        ray.init(
            # no address: a private local instance, never a cluster someone else started on
            # this machine (Ray's own default would join it); "auto" joins that one on purpose
            address=target,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=True,
            runtime_env={"env_vars": WORKER_ENV},
            configure_logging=True,
        )
    except ConnectionError as exc:  # "auto" without a cluster, a GCS that never answers
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(f"--address {target}: cannot connect to a Ray cluster: {first}") from exc


def worker_setup(cpus: float) -> None:
    """Per-process setup of a Ray worker: threads, quiet logs, DeepSpeed's accelerator."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name in ("DeepSpeed", "lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
