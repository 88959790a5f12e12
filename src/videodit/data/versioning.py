"""DVC behind three functions: make sure the project is a DVC repo, point it at a remote, version `data/`.

Works in a git checkout (the project itself) and in a plain folder (tests, scratch projects),
where the repo is initialised without SCM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from dvc.repo import Repo

REMOTE_NAME = "storage"


@dataclass(frozen=True)
class DataSnapshot:
    md5: str  # DVC's directory hash: the data version of raw_videos
    n_files: int
    size_bytes: int
    pushed_objects: int  # 0 when the remote already held every object
    dvc_file: Path
    remote_url: str


class DataVersioningError(Exception):
    """A DVC operation failed; the message names the repo, the path and the remote."""


def open_repo(project_dir: Path, remote_url: str) -> Repo:
    """The DVC repo at `project_dir`, created when missing, with `remote_url` as its default remote.

    The remote goes to `.dvc/config.local`: it is a property of this machine, not of the project.
    """
    project_dir = Path(project_dir)
    if not (project_dir / ".dvc").is_dir():
        Repo.init(str(project_dir), no_scm=not (project_dir / ".git").exists())
    repo = Repo(str(project_dir))
    with repo.config.edit("local") as conf:
        conf["remote"][REMOTE_NAME] = {"url": str(remote_url)}
        conf["core"]["remote"] = REMOTE_NAME
        conf["core"]["analytics"] = False  # no telemetry from pipelines
    return Repo(str(project_dir))  # reopen so the new config is read


def version_data(project_dir: Path, data_rel: str, remote_url: str) -> DataSnapshot:
    """`dvc add` the data folder and `dvc push` it; returns the directory hash and what was pushed."""
    dvc_file = Path(project_dir) / f"{data_rel}.dvc"
    previous = dvc_file.read_bytes() if dvc_file.is_file() else None
    try:
        if "://" not in str(remote_url):  # a local remote: create the folder so a first push works
            Path(remote_url).expanduser().mkdir(parents=True, exist_ok=True)
        repo = open_repo(project_dir, remote_url)
        repo.add(str(Path(project_dir).resolve() / data_rel))
        pushed = repo.push()
    except Exception as exc:  # DVC raises many types; all mean the same to a user: this step failed
        # The .dvc file must keep naming data the remote holds: an add whose push failed is undone.
        if previous is None:
            dvc_file.unlink(missing_ok=True)
        else:
            dvc_file.write_bytes(previous)
        raise DataVersioningError(
            f"DVC could not version {Path(project_dir) / data_rel} to remote {remote_url}: {exc}"
        ) from exc
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    return DataSnapshot(
        md5=out["md5"], n_files=out["nfiles"], size_bytes=out["size"],
        pushed_objects=pushed, dvc_file=dvc_file, remote_url=str(remote_url),
    )  # fmt: skip
