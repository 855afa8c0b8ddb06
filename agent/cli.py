"""`python -m agent run …` (the daemon) and `python -m agent finalize DIR` (Jibri's hook)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from agent.settings import OPTIONS, TOKEN_FILE_ENV, Settings, SettingsError, load_settings
from common import logs
from common.logs import event
from common.wire import TOKEN_ENV

log = logging.getLogger("agent")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_RUN_EPILOG = f"""\
Every flag can also be set through the environment variable shown; a flag given on the
command line wins. The controller token comes from --token-file or {TOKEN_ENV}.
SIGTERM or SIGINT stop the agent cleanly; a drain in progress resumes on the next start."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jibri-agent",
        description="The jibri-autoscaler agent on each Jibri VM.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="report Jibri's status to the controller and carry out drains",
        description="Report Jibri's status to the controller and carry out drains.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        default = "" if option.default is None else f"; default {option.default}"
        text = f"{option.help} [{option.env}{default}]"
        if option.is_flag:
            run.add_argument(option.flag, dest=option.name, action="store_true", help=text)
        else:
            run.add_argument(option.flag, dest=option.name, metavar=option.metavar, help=text)
    run.add_argument(
        "--token-file",
        dest="token_file",
        metavar="PATH",
        help=f"file holding the controller token [{TOKEN_FILE_ENV}; else {TOKEN_ENV}]",
    )
    finalize = commands.add_parser(
        "finalize",
        help="hand a finished recording directory to the upload spool (Jibri's finalize script)",
        add_help=False,
    )
    finalize.add_argument("args", nargs=argparse.REMAINDER)
    wait = commands.add_parser(
        "wait-in-service",
        help="exit once IMDS says the Auto Scaling group means this instance for service "
        "(jibri.service's ExecStartPre with a warm pool)",
        description="Poll IMDSv2 autoscaling/target-lifecycle-state until it is InService "
        "(or absent: no group); exit 0 then, 1 when stopped first.",
    )
    wait.add_argument("--imds-url", default="http://169.254.169.254", metavar="URL")
    wait.add_argument("--interval", default=5.0, type=float, metavar="SECONDS")
    return parser


async def _wait_in_service(imds_url: str, interval: float) -> int:
    from agent.warm_gate import wait_in_service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return EXIT_OK if await wait_in_service(imds_url, interval, stop) else EXIT_FAILED


def _finalize(args: Sequence[str]) -> int:
    from agent.finalize import finalize_main

    return finalize_main(args)


async def _run(settings: Settings) -> int:
    from agent.daemon import run_agent
    from agent.servers import StartupError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        ok = await run_agent(settings, stop)
    except StartupError as exc:
        event(log, "cannot start", level=logging.ERROR, error=str(exc))
        return EXIT_FAILED
    return EXIT_OK if ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    parser = _parser()
    namespace = parser.parse_args(arguments)
    if namespace.command == "finalize":
        return _finalize(namespace.args)
    if namespace.command == "wait-in-service":
        logs.configure("info", "text")
        return asyncio.run(_wait_in_service(namespace.imds_url, namespace.interval))
    try:
        settings = load_settings(vars(namespace), environ)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"jibri-agent run: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(_run(settings))
