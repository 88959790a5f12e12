"""Schedules: off until switched on in the UI (or by the daemon's config)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

weekly_retraining = ScheduleDefinition(
    name="weekly_retraining",
    job_name="training_job",  # defs/jobs.py
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    default_status=DefaultScheduleStatus.STOPPED,
)
