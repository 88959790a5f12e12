"""Shared fixtures: tiny datasets and scratch projects, each built in seconds."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# `make test` runs pytest-xdist with --dist loadfile: a module runs on one worker, so its module-scoped fixtures
# (the production stack, the tiny graph) are built once. Modules are handed out in item order
# (--no-loadscope-reorder): the three longest go first, so the workers end together instead of one starting the stack
# module or the browser's whole-graph run last (the README's figures have the suite's times).
LONGEST_MODULES = ("test_stack", "test_model_assets", "test_ui")


def pytest_configure(config):
    """Under pytest-xdist, each worker keeps to its own share of the CPUs (and so do the services and runs it
    starts): two workers each running torch and onnxruntime on every core fought over them."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if count > 1 and worker.startswith("gw") and len(cpus) >= count:
        os.sched_setaffinity(0, cpus[int(worker[2:]) % count :: count])


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(LONGEST_MODULES)))  # stable: each module keeps its order


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float = 8,
    codec: str = "libx264",
    fmt: str | None = None,
    audio: bool = False,
    pts: list[int] | None = None,
) -> Path:
    """Encode uint8 [T, H, W, 3] frames; `pts` (in 1/1000 s) makes a variable-frame-rate file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None:
            samples = (np.sin(np.linspace(0, 400, 16000 * len(frames) // int(fps))) * 0.2).astype(np.float32)
            for start in range(0, len(samples) - 1024, 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(audio_stream.encode(chunk))
            container.mux(audio_stream.encode(None))
    return path


def moving_square(n: int = 16, height: int = 64, width: int = 64, colour=(255, 0, 0), step: int = 2) -> np.ndarray:
    """A 16 px square moving right `step` px per frame on black."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        x = 4 + t * step
        frames[t, 24:40, x : x + 16] = colour
    return frames


@pytest.fixture
def project(tmp_path):
    """A scratch project folder and a DVC remote outside it."""
    root = tmp_path / "project"
    root.mkdir()
    return root, tmp_path / "dvc-remote"


@pytest.fixture(autouse=True)
def restore_mlflow_uris():
    """The MLflow resource and the CLI set process-wide tracking and registry URIs (and their environment
    variables); left set, a later test would talk to an earlier test's store or to a server that is gone."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    for key, value in saved_env.items():  # last: the setters above write these variables too
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class NetworkBlocked(OSError):
    """Raised by `no_network` for any connection or name lookup that would leave this machine."""


def _is_loopback(host) -> bool:
    import ipaddress

    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: resolving it would query DNS


@pytest.fixture
def no_network(monkeypatch):
    """The network is gone for the test: connecting (TCP or UDP) to, or resolving, anything but loopback raises
    NetworkBlocked at once, so code that reaches for a hub fails loudly instead of timing out or succeeding."""
    import socket

    def guard(address):
        host = address[0] if isinstance(address, tuple) else address  # AF_UNIX paths are strings: local
        if isinstance(address, tuple) and not _is_loopback(host):
            raise NetworkBlocked(f"test tried to reach {address!r} with the network blocked")

    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        guard(args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise NetworkBlocked(f"test tried to resolve {host!r} with the network blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # create_connection resolves through it first
    yield NetworkBlocked


@pytest.fixture
def one_torch_thread():
    """Tiny models step many times faster on one intra-op thread than on two cores shared with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def held_out_phrasings(captions, domain) -> list[str]:
    """The captions that use a phrasing the domain holds out of training: one of its held-out templates, whatever
    fills it, or one of its held-out synonyms as a word."""
    from videodit.captioning.descriptive import caption_words, held_out_pattern

    templates = [held_out_pattern(t) for t in domain.held_out_templates]
    return [c for c in captions if any(t.fullmatch(c) for t in templates) or caption_words(c) & set(domain.held_out_synonyms)]
