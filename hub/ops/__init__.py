"""Operations over the pipeline: the sync log's read side, backfill, reconcile, dashboard, metrics."""
