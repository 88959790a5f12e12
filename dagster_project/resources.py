"""Resources injected into the assets: where the project lives, and DVC."""


import os
from pathlib import Path

from dagster import ConfigurableResource

from videodit.data.versioning import DataSnapshot, version_data
from videodit.presets import DataPreset, data_preset

DEFAULT_DVC_REMOTE = "~/.cache/videodit/dvc-remote"


class Workspace(ConfigurableResource):
    """The project folder every asset reads and writes, and the preset that sizes the whole graph."""

    project_dir: str = os.environ.get("VIDEODIT_PROJECT_DIR", os.getcwd())
    preset: str = os.environ.get("VIDEODIT_PRESET", "demo")

    @property
    def root(self) -> Path:
        return Path(self.project_dir).expanduser().resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def gx_root(self) -> Path:
        return self.root / "great_expectations"

    def artifacts(self, asset_name: str) -> Path:
        path = self.root / "artifacts" / asset_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def data(self) -> DataPreset:
        return data_preset(self.preset)


class DVCResource(ConfigurableResource):
    """Versions `data/` with DVC and pushes it to `remote_url` (a folder, or s3://, gs://, ... URL)."""

    remote_url: str = os.environ.get("VIDEODIT_DVC_REMOTE", DEFAULT_DVC_REMOTE)

    def version(self, project_dir: Path, data_rel: str = "data") -> DataSnapshot:
        remote = self.remote_url if "://" in self.remote_url else str(Path(self.remote_url).expanduser())
        return version_data(project_dir, data_rel, remote)
