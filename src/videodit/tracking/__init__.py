"""MLflow: where runs are tracked, how Dagster runs nest, and the registry's champion/challenger aliases."""
