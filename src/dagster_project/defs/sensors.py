"""Sensors: a new data version retrains once."""

from dagster import AssetKey, DefaultSensorStatus, EventLogEntry, RunRequest, SensorEvaluationContext, SkipReason, asset_sensor


@asset_sensor(asset_key=AssetKey("raw_videos"), job_name="retraining_job", default_status=DefaultSensorStatus.STOPPED)
def retrain_on_new_data(context: SensorEvaluationContext, asset_event: EventLogEntry):
    """A new DVC data version of raw_videos retrains once: the run key is the data version."""
    version = asset_event.asset_materialization.tags.get("dagster/data_version") if asset_event.asset_materialization else None
    if version is None:
        return SkipReason("raw_videos materialization without a data version")
    return RunRequest(run_key=version, tags={"videodit/data_version": version})
