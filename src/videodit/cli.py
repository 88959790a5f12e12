"""`videodit generate "a red circle moves left" -o out.mp4`: text to video with an exported ONNX bundle.

--model is a bundle folder or an MLflow URI (models:/name@alias, runs:/...), downloaded from the tracking store
in MLFLOW_TRACKING_URI, else the project's sqlite:///<project>/mlflow.db. Generation runs on onnxruntime
(no torch); mlflow is imported only to resolve a URI. Bad input ends with exit code 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "models:/videodit-onnx@champion"
DEFAULT_SINGLE_OUTPUT = "out.mp4"
DEFAULT_BATCH_OUTPUT = "generated"
EXIT_USAGE = 2
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


class UsageError(Exception):
    """A problem with what the user asked for; main() prints it on one line and exits with code 2."""


def tracking_uri() -> str:
    from videodit.tracking.mlflow_store import default_tracking_uri

    project = Path(os.environ.get("VIDEODIT_PROJECT_DIR", os.getcwd()))
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(project)


def resolve_bundle(model: str) -> Path:
    """A bundle folder as given, or the folder holding bundle.json inside the downloaded MLflow artifacts."""
    from videodit.generation.onnx_generator import BUNDLE_JSON

    if not URI_SCHEME.match(model):
        path = Path(model)
        if not path.is_dir():
            raise UsageError(f"model folder not found: {path}")
        return path
    store = tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise UsageError(f"cannot resolve {model}: tracking store {store} does not exist (run the pipeline "
                         "or set MLFLOW_TRACKING_URI)")  # fmt: skip
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_registry_uri(store)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, tracking_uri=store))
    except MlflowException as exc:
        reason = str(exc).splitlines()[0]
        raise UsageError(f"cannot resolve {model} in tracking store {store}: {reason}") from None
    found = sorted(local.rglob(BUNDLE_JSON))
    if len(found) != 1:
        raise UsageError(f"{model} (downloaded to {local}) holds {len(found)} {BUNDLE_JSON} files, expected one")
    return found[0].parent


def parse_size(text: str) -> tuple[int, int]:
    """'64x48' -> (width 64, height 48)."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 64x64")
    return int(match[1]), int(match[2])


def read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise UsageError(f"prompt file not found: {path}")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"prompt file {path} holds no prompts (one per line)")
    return prompts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videodit", description="videodit: a small text-to-video model")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate videos from text with an exported ONNX bundle")
    gen.add_argument("prompt", nargs="?", help="the caption; or give --batch FILE")
    gen.add_argument("--batch", type=Path, help="a text file with one prompt per line; -o is then a folder")
    gen.add_argument("-o", "--output", type=Path,
                     help=f"the MP4 (default {DEFAULT_SINGLE_OUTPUT}; its GIF, contact_sheet.png and manifest.json "
                     f"go beside it) or with --batch the folder (default {DEFAULT_BATCH_OUTPUT}/)")  # fmt: skip
    gen.add_argument("--model", default=DEFAULT_MODEL, help=f"bundle folder or MLflow URI (default {DEFAULT_MODEL})")
    gen.add_argument("--steps", type=int, help="Euler steps (default: the bundle's)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed; with --batch, prompt i uses seed + i")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the bundle's)")
    gen.add_argument("--frames", type=int, help="frames per video (default: the bundle's)")
    gen.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT, e.g. 64x64 (default: the bundle's)")
    return parser


def generate(args: argparse.Namespace) -> Path:
    from videodit.generation import GeneratedClip, OnnxVideoGenerator, write_outputs

    if (args.prompt is None) == (args.batch is None):
        raise UsageError("give either a prompt or --batch FILE")
    prompts = read_prompts(args.batch) if args.batch else [args.prompt]
    if args.batch:
        out_dir, names = args.output or Path(DEFAULT_BATCH_OUTPUT), [f"{i:03d}" for i in range(len(prompts))]
    else:
        output = args.output or Path(DEFAULT_SINGLE_OUTPUT)
        out_dir, names = output.parent, [output.stem]
    seeds = [args.seed + i for i in range(len(prompts))]
    width, height = args.size or (None, None)

    started = time.perf_counter()
    bundle = resolve_bundle(args.model)
    generator = OnnxVideoGenerator(bundle)
    loaded = time.perf_counter()
    videos = generator.generate(prompts, seeds, args.steps, args.guidance, args.frames, height, width)
    generated = time.perf_counter()

    spec = generator.spec
    clips = [GeneratedClip(n, p, s, v) for n, p, s, v in zip(names, prompts, seeds, videos)]
    settings = {
        "model": args.model,
        "model_versions": spec.source_versions,
        "steps": args.steps or spec.steps,
        "guidance": spec.guidance if args.guidance is None else args.guidance,
        "frames": videos[0].shape[0],
        "height": videos[0].shape[1],
        "width": videos[0].shape[2],
        "providers": generator.providers,
        "timings": {
            "load_s": round(loaded - started, 3),
            "generate_s": round(generated - loaded, 3),
            "seconds_per_video": round((generated - loaded) / len(videos), 3),
        },
    }
    return write_outputs(out_dir, clips, spec.fps, settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = generate(args)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"videodit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {manifest.parent} ({manifest.name}, MP4s, GIFs, contact sheet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
