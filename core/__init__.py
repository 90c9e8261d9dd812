"""The lower layer the gateway and the workers share: settings, database tables and
repositories, cache, job queue, item catalogue, logging and metrics."""
