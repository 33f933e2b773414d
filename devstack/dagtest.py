"""One Airflow process that runs several `airflow` CLI commands in turn (`python -m devstack.dagtest`).

`airflow dags test <dag>` in a fresh process pays, before the DAG's first task does any work, for the
interpreter and Airflow's imports, the CLI, the in-process Execution API app and the task's own imports
(DuckDB, Great Expectations, Splink, the report's templates): 15-25 s per DAG on a 2-CPU machine, for a few
seconds of work. This worker pays it once: it reads one command per line on stdin and runs it through
Airflow's own CLI parser in this process (the code path of the `airflow` executable: `args.func(args)`), with
the command's stdout and stderr sent to the files the caller names, and answers each command with one JSON
line on its stdout.

Protocol (one JSON object per line):
    -> {"args": ["dags", "test", "ingest_population"], "stdout": "/path/out", "stderr": "/path/err",
        "env": {...}}
    <- {"returncode": 0}
    -> {"preload": ["great_expectations", "devstack.dagtest:warm_execution_api"], "stdout": ..., "stderr": ...}
    <- {"returncode": 0}
`env` (optional) is the command's environment: variables read when used (connections `AIRFLOW_CONN_*`, the
platform's `LIENTHONG_*`) may differ from the worker's start; the caller starts a new worker when others
differ (`devstack.demo`). `preload` imports modules (and calls `module:function`) ahead of the commands that
need them, so a caller can warm the process while it does something else. The worker exits at the end of its
stdin. Output written between commands (start-up, a background thread's late line) goes to its stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any


def warm_execution_api() -> None:
    """Build the in-process Execution API `dags test` runs tasks through (one per process) and answer one
    request with it (`/health`): its first request generates the API's versioned routers (cadwyn), 8-10 s
    otherwise spent in a DAG's first task."""
    import httpx
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    api = in_process_api_server()
    # Not closed: the transport is the process's, and the tasks' clients use it after this one.
    client = httpx.Client(transport=api.transport, base_url="http://in-process.invalid./")
    client.get("/health").raise_for_status()


def _run(parser: Any, argv: list[str]) -> int:
    """Run one CLI command as `airflow <argv>` would; its exit status."""
    try:
        args = parser.parse_args(argv)
        args.func(args)
        return 0
    except SystemExit as exc:  # the CLI's way of failing (`dags test` raises it when the run failed)
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


def _preload(names: list[str]) -> int:
    """Import each module (and call `module:function`); one that fails is reported and the rest still load."""
    failed = 0
    for name in names:
        module, _, function = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception:
            traceback.print_exc()
            failed = 1
    return failed


def _redirect(stdout: str, stderr: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)


def _apply_env(env: dict[str, str], previous: set[str]) -> set[str]:
    """The command's environment: its variables set, those the worker started with or an earlier command set
    and it lacks removed (what Airflow sets for itself stays). The keys to compare the next command with."""
    for key in previous - env.keys():
        os.environ.pop(key, None)
    os.environ.update(env)
    return previous | env.keys()


def main() -> int:
    # The answers go to the original stdout; from here on fd 1 is the worker's stderr between commands.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    idle = os.dup(2)
    os.dup2(idle, 1)
    known = set(os.environ)  # the keys a command's environment decides about

    # What `airflow` (airflow.__main__) does before a command, once.
    from airflow import configuration  # noqa: F401  (first: it initialises and validates the config)
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    parser = cli_parser.get_parser()

    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if "env" in command:
            known = _apply_env(command["env"], known)
        _redirect(command["stdout"], command["stderr"])
        try:
            code = _preload(command["preload"]) if "preload" in command else _run(parser, list(command["args"]))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(idle, 1)
            os.dup2(idle, 2)
        answers.write(json.dumps({"returncode": code}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
