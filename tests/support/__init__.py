"""What the tests and the benchmarks share: real processes and scratch state to run them on.

- `paths`: where the shipped model, prompt set and dataset are (`SMALL_MODEL`, ...).
- `processes`: a free port, `wait_for`, the `promptrec` command, CPU seconds of a process.
- `gateway_process`: `GatewayProcess`, `promptrec serve` as its own OS process.
- `worker_process`: `WorkerProcess`, `promptrec worker` as its own OS process.
- `private_servers`: `RedisServer`, `PostgresServer`, private servers a caller may kill.
- `databases`: the shared local Postgres and Redis, scratch databases, a prepared database.
- `settings`: the admin key, `Settings` for an in-process app, the environment of a process.
- `gateway_app`: the in-process app's handle and the prompt writers the API tests use.
- `search_jobs`: queue a search job as the gateway does, read its state from the database.
- `deployment_files`: the Dockerfile, docker-compose.yml and .env.example, parsed.
- `soft_prompts`: a seeded soft-prompt composer for a test model, the model side's ranking.
"""
