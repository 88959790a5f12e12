"""Errors we raise ourselves reach the run page as a `dagster.Failure`: the cause first, the file in metadata."""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure, MetadataValue

from videodit.data.shards import ShardChecksumError


@contextmanager
def failing_on_corrupt_shards(producer: str) -> Iterator[None]:
    """A shard that fails its checksum becomes a Failure naming the file and `producer`, the asset that writes it.
    No retries: a retry reads the same bytes."""
    try:
        yield
    except ShardChecksumError as error:
        raise Failure(
            description=f"{error}: materialize {producer} again",
            metadata={"file": MetadataValue.path(str(error.path))},
            allow_retries=False,
        ) from error
