"""`videodit generate "a red circle moves left" -o out.mp4`: text to video with an exported ONNX bundle.

The same model animates an image (--image), ends at one (--last-image; both: interpolation), continues a video
(--extend, --extend-backward) and makes videos longer than its window (--frames beyond the trained length,
generated window by window). Given images and videos are fitted to the size generated, by default the trained
size nearest their aspect ratio.

--model is a bundle folder or an MLflow URI (models:/name@alias, runs:/...), looked up in the tracking store in
MLFLOW_TRACKING_URI, else the project's sqlite:///<project>/mlflow.db, the project being VIDEODIT_PROJECT_DIR or
else the current folder. A store that does not exist is an error: the lookup never creates one. Generation runs
on onnxruntime (no torch); mlflow is imported only to resolve a URI. Bad input ends with exit code 2 and a
one-line error; a warning (a size that was not trained, a prompt cut short) is one line too.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

DEFAULT_MODEL = "models:/videodit-onnx@champion"
DEFAULT_SINGLE_OUTPUT = "out.mp4"
DEFAULT_BATCH_OUTPUT = "generated"
EXIT_USAGE = 2
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")

MAX_STEPS = 1000  # Euler steps; bundles sample in tens, and every step is one DiT call per prompt
MAX_GUIDANCE = 50.0  # classifier-free guidance scale; bundles use single digits, 1e39 overflows to a black video
MAX_PROMPTS = 1000  # prompts (videos) in one --batch file
MAX_PROMPT_FILE_BYTES = 4 * 1024 * 1024  # size of a --batch file, read whole into memory


class UsageError(Exception):
    """A problem with what the user asked for; main() prints it on one line and exits with code 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors (bad option values included) become a UsageError: one line, no usage block."""

    def error(self, message: str):
        raise UsageError(message)


def whole_number(minimum: int, maximum: float = math.inf) -> Callable[[str], int]:
    """An argparse type: an integer from `minimum` to `maximum`."""
    allowed = f">= {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, got {text!r}")
        return value

    return parse


def guidance_scale(text: str) -> float:
    """An argparse type: a number from 0 to MAX_GUIDANCE (so not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_GUIDANCE:g}, got {text!r}")
    return value


def utf8_text(text: str) -> str:
    """An argparse type: text that is valid UTF-8 (Python turns undecodable bytes in argv into lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        position = exc.start + 1
        raise argparse.ArgumentTypeError(f"not valid UTF-8 (an undecodable byte at character {position})") from None
    return text


def utf8_path(text: str) -> Path:
    """An argparse type for a path written into the manifest, which is UTF-8."""
    return Path(utf8_text(text))


def parse_size(text: str) -> tuple[int, int]:
    """'64x48' -> (width 64, height 48)."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 64x64")
    return int(match[1]), int(match[2])


def tracking_store() -> tuple[str, str]:
    """The tracking URI and where it came from: MLFLOW_TRACKING_URI, else the project's SQLite store."""
    from videodit.tracking.mlflow_store import default_tracking_uri

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "from MLFLOW_TRACKING_URI"
    if os.environ.get("VIDEODIT_PROJECT_DIR"):
        return default_tracking_uri(Path(os.environ["VIDEODIT_PROJECT_DIR"])), "the project in VIDEODIT_PROJECT_DIR"
    return default_tracking_uri(Path.cwd()), "the current folder, as VIDEODIT_PROJECT_DIR is unset"


def check_store_exists(store: str, origin: str, model: str) -> None:
    """Refuse a store MLflow would create on first use (an SQLite file) or wait for (an unreachable server)."""
    from videodit.tracking.mlflow_store import TrackingStoreUnavailable, check_tracking_store, sqlite_file

    database = sqlite_file(store)
    if database is not None and not database.is_file():
        raise UsageError(f"cannot resolve {model}: tracking store {store} does not exist ({origin}); run the "
                         "pipeline there, or set VIDEODIT_PROJECT_DIR to the project folder or MLFLOW_TRACKING_URI "
                         "to a tracking store")  # fmt: skip
    try:
        check_tracking_store(store)
    except TrackingStoreUnavailable as exc:
        raise UsageError(f"cannot resolve {model}: {exc}") from None


def download_bundle(model: str) -> Path:
    """The folder holding bundle.json inside the MLflow artifacts `model` names."""
    from videodit.generation.onnx_generator import BUNDLE_JSON

    store, origin = tracking_store()
    check_store_exists(store, origin, model)
    import mlflow
    from mlflow.exceptions import MlflowException

    # models:/ lookups open clients on the process-wide URIs; left unset they create ./mlflow.db.
    mlflow.set_tracking_uri(store)
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


def resolve_bundle(model: str) -> Path:
    """A bundle folder as given, or the one downloaded for an MLflow URI."""
    if URI_SCHEME.match(model):
        return download_bundle(model)
    path = Path(model)
    if not path.is_dir():
        raise UsageError(f"model folder not found: {path}")
    return path


def read_prompts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 prompt file, at most MAX_PROMPTS of them."""
    if not path.is_file():
        raise UsageError(f"prompt file not found: {path}")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise UsageError(f"prompt file {path} is {path.stat().st_size} bytes, over the limit of "
                         f"{MAX_PROMPT_FILE_BYTES}")  # fmt: skip
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte, offset = raw[exc.start], exc.start
        raise UsageError(f"prompt file {path} is not UTF-8: byte 0x{byte:02x} at offset {offset}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"prompt file {path} holds no prompts (one per line)")
    if len(prompts) > MAX_PROMPTS:
        raise UsageError(f"prompt file {path} holds {len(prompts)} prompts, over the limit of {MAX_PROMPTS} per run")
    return prompts


def check_output_folder(folder: Path) -> None:
    """Refuse before generating when `folder` cannot be created: its nearest existing ancestor must be a folder."""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        raise UsageError(f"cannot write into {folder}: {existing} is not a folder")


def output_plan(args: argparse.Namespace, count: int) -> tuple[Path, list[str]]:
    """The output folder and the file stem of each video."""
    if args.batch:
        return args.output or Path(DEFAULT_BATCH_OUTPUT), [f"{i:03d}" for i in range(count)]
    output = args.output or Path(DEFAULT_SINGLE_OUTPUT)
    if output.is_dir():
        output = output / DEFAULT_SINGLE_OUTPUT
    return output.parent, [output.stem]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="videodit", description="videodit: a small text-to-video model")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate videos from text with an exported ONNX bundle")
    gen.add_argument("prompt", nargs="?", type=utf8_text, help="the caption; or give --batch FILE")
    gen.add_argument(
        "--batch", type=Path, help=f"a UTF-8 file with one prompt per line (at most {MAX_PROMPTS}); -o is then a folder"
    )
    gen.add_argument("-o", "--output", type=utf8_path,
                     help=f"the MP4 (default {DEFAULT_SINGLE_OUTPUT}; its GIF, contact_sheet.png and manifest.json "
                     f"go beside it; an existing folder gets {DEFAULT_SINGLE_OUTPUT} and the rest inside it) or "
                     f"with --batch the folder (default {DEFAULT_BATCH_OUTPUT}/)")  # fmt: skip
    gen.add_argument("--model", default=DEFAULT_MODEL, type=utf8_text,
                     help=f"bundle folder or MLflow URI (default {DEFAULT_MODEL}), looked up in MLFLOW_TRACKING_URI, "
                     "else in mlflow.db of VIDEODIT_PROJECT_DIR or of the current folder")  # fmt: skip
    gen.add_argument("--steps", type=whole_number(1, MAX_STEPS),
                     help=f"Euler steps, 1 to {MAX_STEPS} (default: the bundle's)")  # fmt: skip
    gen.add_argument("--seed", type=whole_number(0), default=0,
                     help="noise seed, >= 0; with --batch, prompt i uses seed + i")  # fmt: skip
    gen.add_argument("--guidance", type=guidance_scale,
                     help=f"classifier-free guidance scale, 0 to {MAX_GUIDANCE:g} (default: the bundle's)")  # fmt: skip
    # The generator checks both against bundle.json (the graphs' limits, the trained sizes).
    gen.add_argument("--frames", type=int, help="frames per video, 1 + r·k (default: the bundle's)")
    gen.add_argument("--size", type=parse_size,
                     help="WIDTHxHEIGHT, e.g. 96x48 (default: the bundle's, or the trained size nearest the aspect "
                     "ratio of a given image or video)")  # fmt: skip
    gen.add_argument("--image", type=utf8_path, help="an image the video starts from (image-to-video)")
    gen.add_argument("--last-image", type=utf8_path, help="an image the video ends at (with --image: interpolation)")
    gen.add_argument("--extend", type=utf8_path, metavar="VIDEO",
                     help="a video to continue by --frames new frames (default: one window)")  # fmt: skip
    gen.add_argument("--extend-backward", action="store_true", help="with --extend: generate what leads into the video")
    gen.add_argument("--prompt-rewriter", type=utf8_text, metavar="MODULE:FUNCTION",
                     help="a function from str to str that rewrites each prompt before generation, e.g. the "
                     "built-in videodit.generation.prompt_rewriter:expand_shapes_prompt (a short prompt into the "
                     "training captions' style); off by default, recorded in the manifest when on")  # fmt: skip
    return parser


def generate(args: argparse.Namespace) -> Path:
    from videodit.generation import GeneratedClip, OnnxVideoGenerator, write_outputs
    from videodit.generation.modes import GenerationRequest, generate_request
    from videodit.generation.prompt_rewriter import rewrite_prompts
    from videodit.sampling import prompt_seeds

    if (args.prompt is None) == (args.batch is None):
        raise UsageError("give either a prompt or --batch FILE")
    given = read_prompts(args.batch) if args.batch else [args.prompt]
    prompts = rewrite_prompts(given, args.prompt_rewriter) if args.prompt_rewriter else given
    out_dir, names = output_plan(args, len(prompts))
    check_output_folder(out_dir)
    seeds = prompt_seeds(args.seed, len(prompts))

    started = time.perf_counter()
    bundle = resolve_bundle(args.model)
    generator = OnnxVideoGenerator(bundle)
    loaded = time.perf_counter()
    request = GenerationRequest(prompts, seeds, args.steps, args.guidance, args.frames, args.size, args.image,
                                args.last_image, args.extend, args.extend_backward)  # fmt: skip
    videos, conditioning = generate_request(generator, request)
    generated = time.perf_counter()

    spec = generator.spec
    clips = [GeneratedClip(n, p, s, v, conditioning["given_frames"], g if args.prompt_rewriter else None)
             for n, p, s, v, g in zip(names, prompts, seeds, videos, given)]  # fmt: skip
    settings = {
        "model": args.model,
        **({"prompt_rewriter": args.prompt_rewriter} if args.prompt_rewriter else {}),
        "model_versions": spec.source_versions,
        "conditioning": conditioning,
        **asdict(generator.sampler(args.steps, args.guidance)),
        "frames": videos[0].shape[0],
        "height": videos[0].shape[1],
        "width": videos[0].shape[2],
        "providers": generator.providers,
        "precision": spec.precision,
        "session_settings": generator.settings,
        "timings": {
            "load_s": round(loaded - started, 3),
            "generate_s": round(generated - loaded, 3),
            "seconds_per_video": round((generated - loaded) / len(videos), 3),
        },
    }
    return write_outputs(out_dir, clips, spec.fps, settings)


def print_one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for a terminal user: the message on one line of stderr, not Python's two lines
    of file, line number and source."""
    print(f"videodit: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        with warnings.catch_warnings():  # restores the caller's showwarning on the way out
            warnings.showwarning = print_one_line_warning
            manifest = generate(build_parser().parse_args(argv))
    except (UsageError, ValueError, FileNotFoundError) as exc:  # InputError is a ValueError naming the file
        print(f"videodit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {manifest.parent} ({manifest.name}, MP4s, GIFs, contact sheet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
