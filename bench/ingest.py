"""Ingest throughput: our probe + validate + curate path against a plain PyAV decode of the same files,
and peak memory at 1× and 4× the dataset size. Not a test: prints a table of ratios.

    python bench/ingest.py                    # demo geometry (16 frames, 64×64), 168 and 672 clips
    python bench/ingest.py --frames 64 --size 256 --clips-per-combination 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import pandas as pd
from av.video.reformatter import VideoReformatter

from videodit.data.config import CurationConfig, ProbeConfig, SyntheticConfig, ValidationConfig
from videodit.data.curation import curate
from videodit.data.probe import DECODED_CLIPS_DIR, METADATA_FILE, probe_rows, write_metadata
from videodit.data.sources import collect_source, stage_source
from videodit.data.synthetic import generate_shapes_dataset
from videodit.data.validation import validate_metadata


WORKERS = ("plain", "swscale", "ours")  # the peer, the peer with one swscale context per file, our path


def plain_decode(paths: list[Path], one_swscale_context: bool = False) -> None:
    """The peer: open each file and decode every frame to RGB, nothing else.

    `one_swscale_context` converts with one swscale context per file, as our path does, instead of the
    one `to_ndarray` builds per frame: not the plain way, shown so the gain that trick brings is visible.
    """
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            reformatter = VideoReformatter() if one_swscale_context else None
            for frame in container.decode(stream):
                if one_swscale_context:
                    reformatter.reformat(frame, format="rgb24").to_ndarray()
                else:
                    frame.to_ndarray(format="rgb24")


def our_path(data_dir: Path, work: Path, curation: CurationConfig) -> None:
    clips = collect_source(data_dir, data_dir / "captions.csv")
    write_metadata(probe_rows(data_dir, clips, ProbeConfig(), curation, progress=False), work, curation)
    outcome = validate_metadata(pd.read_parquet(work / METADATA_FILE), work / "gx", ValidationConfig(), curation)
    curate(outcome.accepted, work / DECODED_CLIPS_DIR, work / "shards", curation, progress=False)


def worker(args) -> None:
    """Runs one measurement in a fresh process so its peak RSS is its own."""
    data_dir, work = Path(args.data_dir), Path(args.work)
    curation = CurationConfig(fps=args.fps, n_frames=args.frames, height=args.size, width=args.size)
    paths = sorted((data_dir / "videos").glob("*.mp4"))
    started = time.perf_counter()
    if args.worker == "ours":
        our_path(data_dir, work, curation)
    else:
        plain_decode(paths, one_swscale_context=args.worker == "swscale")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"clips": len(paths), "seconds": seconds, "peak_rss_mb": peak_mb}))


def measure(kind: str, data_dir: Path, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data-dir", str(data_dir), "--work", str(work),
           "--frames", str(args.frames), "--size", str(args.size), "--fps", str(args.fps)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--clips-per-combination", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=WORKERS)
    parser.add_argument("--data-dir")
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4):
            data_dir = Path(tmp) / f"data{scale}"
            config = SyntheticConfig(n_frames=args.frames, height=args.size, width=args.size, fps=args.fps,
                                     clips_per_combination=args.clips_per_combination * scale)  # fmt: skip
            generate_shapes_dataset(data_dir, config, progress=False)
            stage_source(collect_source(data_dir, data_dir / "captions.csv"), data_dir, data_dir)
            best = {}
            for _ in range(args.repeats):  # best of N, peer and ours interleaved so both see the same machine
                for kind in WORKERS:
                    work = Path(tmp) / f"work-{kind}-{scale}"
                    result = measure(kind, data_dir, work, args)
                    if kind not in best or result["seconds"] < best[kind]["seconds"]:
                        best[kind] = result
            clips = best["plain"]["clips"]
            plain_rate, swscale_rate, our_rate = (clips / best[kind]["seconds"] for kind in WORKERS)
            rows.append({
                "dataset": f"{scale}× ({clips} clips, {args.frames}×{args.size}×{args.size})",
                "plain PyAV clips/s": round(plain_rate, 1), "probe+validate+curate clips/s": round(our_rate, 1),
                "ratio (goal ≥ 0.7)": round(our_rate / plain_rate, 2),
                "PyAV one swscale ctx clips/s": round(swscale_rate, 1), "ratio to it": round(our_rate / swscale_rate, 2),
                "peak RSS ours MB": round(best["ours"]["peak_rss_mb"]), "peak RSS plain MB": round(best["plain"]["peak_rss_mb"]),
            })  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    growth = rows[1]["peak RSS ours MB"] / rows[0]["peak RSS ours MB"]
    print(f"\npeak RSS of our path at 4× / 1×: {growth:.2f} (goal: flat, ≈ 1.0)")


if __name__ == "__main__":
    main()
