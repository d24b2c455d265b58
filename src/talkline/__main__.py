"""The command line: serve, config, talk, sessions, emulate-gemini, bench."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from talkline.config import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from talkline.services.piper_process import PiperProcess

EXIT_USAGE = 2
LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[session_id]}</cyan> {message}"
)


def configure_logging(level: str) -> None:
    logger.remove()
    logger.configure(extra={"session_id": "-"})
    logger.add(sys.stderr, level=level, format=LOG_FORMAT)


def load_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as error:
        print(f"talkline: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def serve(args: argparse.Namespace) -> int:
    options = (("host", args.host), ("port", args.port), ("workers", args.workers))
    overrides = {k: v for k, v in options if v is not None}
    settings = load_or_exit().model_copy(update=overrides)
    configure_logging(settings.log_level)
    if settings.workers > 1 and args.fd is None:
        from talkline.supervisor import Supervisor  # imports none of the server

        return Supervisor(settings).run()
    if args.fd is None:
        brain = settings.effective_brain
        logger.info(f"talkline on http://{settings.host}:{settings.port} (brain: {brain})")
    piper = early_piper(settings)  # before the ~2 s of imports below, which it overlaps
    logger.disable("pipecat")  # its import banner, as main() hides it for other commands
    from talkline.app import create_app
    from talkline.history.store import DatabaseUrlError
    from talkline.serve import serve as serve_app

    logger.enable("pipecat")

    try:
        app = create_app(settings, piper=piper)
    except DatabaseUrlError as error:
        print(f"talkline: {error}", file=sys.stderr)
        if piper is not None:
            piper.abandon_early()
        return EXIT_USAGE
    serve_app(app, settings, fd=args.fd)
    return 0


def early_piper(settings: Settings) -> PiperProcess | None:
    """The Piper server the settings ask talkline to run, started now: it takes ~1.3 s to
    answer, and the server's imports (~2 s) then run beside it instead of before it. None
    when no Piper is run here, or when it cannot start now (start-up then reports why)."""
    if settings.effective_tts != "piper" or settings.piper_url:
        return None
    from talkline.services.piper_process import PiperProcess

    try:
        piper = PiperProcess(settings.piper_voice_path, port=settings.piper_port)
        piper.spawn_early()
    except (OSError, ImportError) as error:
        logger.debug(f"Piper not started early: {error}")
        return None
    return piper


def show_config(args: argparse.Namespace) -> int:
    values = load_or_exit().masked()
    if args.json:
        print(json.dumps(values, indent=2, default=str))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            print(f"{name:<{width}}  {value}")
    return 0


def run_talk(args: argparse.Namespace) -> int:
    from talkline.audio import AudioFileError, read_wav
    from talkline.talk import ServerAddressError, server_url, summary, talk

    try:
        audio = read_wav(Path(args.wav), native=args.native)
        url = server_url(args.url)
    except (AudioFileError, ServerAddressError) as error:
        print(f"talkline talk: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(talk(url, audio, out=args.out, as_json=args.json, wait=args.wait))
    except (OSError, TimeoutError) as error:
        print(f"talkline talk: cannot talk to {url}: {error}", file=sys.stderr)
        return 1
    if not args.json:
        print(summary(result))
    for problem in result.errors:
        print(f"talkline talk: {problem}", file=sys.stderr)
    return 1 if result.errors else 0


def show_sessions(args: argparse.Namespace) -> int:
    from talkline.history import cli

    return cli.run(load_or_exit().history_url, args)


EXTRAS = {
    "emulator": ("cryptography",),
    "bench": ("cryptography", "psutil", "matplotlib", "uvloop"),
}


def missing_extra(command: str, extra: str) -> bool:
    """Say in one line what to install when an optional command's extra is missing."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"talkline {command} needs the '{extra}' extra ({', '.join(missing)} missing): "
            f"pip install 'talkline[{extra}]'",
            file=sys.stderr,
        )
    return bool(missing)


def emulate_gemini(args: argparse.Namespace) -> int:
    if missing_extra("emulate-gemini", "emulator"):
        return EXIT_USAGE
    from talkline.emulator import main as emulator_main

    return emulator_main(args.emulator_args)


def run_bench(args: argparse.Namespace) -> int:
    if missing_extra("bench", "bench"):
        return EXIT_USAGE
    from talkline.bench import main as bench_main

    return bench_main(args.bench_args)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="talkline", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="serve /ws, /connect and the web client")
    serve_cmd.add_argument("--host", help="override TALKLINE_HOST")
    serve_cmd.add_argument("--port", type=int, help="override TALKLINE_PORT")
    serve_cmd.add_argument("--workers", type=int, help="override TALKLINE_WORKERS")
    serve_cmd.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a worker's socket
    serve_cmd.set_defaults(run=serve)

    config_cmd = commands.add_parser("config", help="print the effective settings, secrets masked")
    config_cmd.add_argument("--json", action="store_true")
    config_cmd.set_defaults(run=show_config)

    talk_cmd = commands.add_parser("talk", help="speak a WAV file to a server, print what it says")
    talk_cmd.add_argument("wav", help="a WAV file (any rate and channels)")
    talk_cmd.add_argument(
        "--url",
        default="ws://127.0.0.1:5000/ws",
        help="the server: http://host:5000 (where the page is) or its ws://host:5000/ws",
    )
    talk_cmd.add_argument("--out", type=Path, help="save the bot's audio to this WAV file")
    talk_cmd.add_argument("--json", action="store_true", help="one JSON object per event")
    talk_cmd.add_argument(
        "--native",
        action="store_true",
        help="send the WAV's own rate and channels (the server converts); default: 16 kHz mono",
    )
    talk_cmd.add_argument("--wait", type=float, default=30.0, help="seconds to wait for answers")
    talk_cmd.set_defaults(run=run_talk)

    sessions_cmd = commands.add_parser(
        "sessions", help="past sessions, newest first; with an ID, its record and transcript"
    )
    from talkline.history.cli import add_arguments

    add_arguments(sessions_cmd)
    sessions_cmd.set_defaults(run=show_sessions)

    emulator_cmd = commands.add_parser(
        "emulate-gemini",
        help="a local Gemini Live emulator (TLS on 127.0.0.1); --help lists its flags",
        add_help=False,
    )
    emulator_cmd.add_argument("emulator_args", nargs=argparse.REMAINDER)
    emulator_cmd.set_defaults(run=emulate_gemini)

    bench_cmd = commands.add_parser(
        "bench", help="latency and capacity beside a plain Pipecat bot; --help", add_help=False
    )
    bench_cmd.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench_cmd.set_defaults(run=run_bench)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging("WARNING")  # until the command knows better; hides import banners
    if argv[:1] == ["emulate-gemini"]:  # its flags belong to the emulator's own parser
        return emulate_gemini(argparse.Namespace(emulator_args=argv[1:]))
    if argv[:1] == ["bench"]:
        return run_bench(argparse.Namespace(bench_args=argv[1:]))
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
