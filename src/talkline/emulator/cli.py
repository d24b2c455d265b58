"""Command line: run the Gemini Live emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

from loguru import logger

from .server import GeminiEmulator
from .state import EmulatorConfig
from .wire import CLOSE_INTERNAL_ERROR, DEFAULT_MODELS, REASON_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    """Flags of `talkline emulate-gemini`."""
    parser = argparse.ArgumentParser(
        prog="talkline emulate-gemini",
        description="Loopback emulator of the Gemini Live API (BidiGenerateContent).",
    )
    _server_flags(parser.add_argument_group("server"))
    _behaviour_flags(parser.add_argument_group("behaviour"))
    _fault_flags(parser.add_argument_group("faults (each fires once)"))
    return parser


def _server_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--host", default="127.0.0.1", help="IP to listen on (default %(default)s)")
    group.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    group.add_argument(
        "--cert-dir", help="where to write ca.pem and the server cert (default: temp)"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log each connection")


def _behaviour_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--response-delay", type=float, default=0.0, help="seconds before reply")
    group.add_argument("--reply-seconds", type=float, default=1.2, help="length of each reply")
    group.add_argument("--pace", type=float, default=1.0, help="1 = real time, 0 = instant")
    group.add_argument("--chunk-bytes", type=int, default=9600, help="reply bytes per message")
    group.add_argument("--silence-ms", type=float, default=500.0, help="silence that ends a turn")
    group.add_argument("--vad-threshold", type=float, default=500.0, help="RMS of voiced audio")
    group.add_argument("--valid-key", action="append", help="accepted API key (repeatable)")
    group.add_argument("--model", action="append", default=[], help="also accept this model")
    group.add_argument("--any-model", action="store_true", help="accept every model name")
    group.add_argument("--transcript", help="fixed inputTranscription text")
    group.add_argument("--reply-text", help="fixed outputTranscription text")
    group.add_argument(
        "--handle-lifetime", type=float, default=7200.0, help="seconds a resumption handle lives"
    )


def _fault_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--go-away-after-turn", type=int, metavar="N")
    group.add_argument("--go-away-after-seconds", type=float, metavar="T")
    group.add_argument("--go-away-time-left", type=float, default=5.0, metavar="S")
    group.add_argument("--close-after-turn", type=int, metavar="N")
    group.add_argument("--close-after-chunks", type=int, metavar="K", help="close mid-reply")
    group.add_argument("--close-code", type=int, default=CLOSE_INTERNAL_ERROR)
    group.add_argument("--close-reason", default=REASON_INTERNAL)
    group.add_argument("--stall-after-turn", type=int, metavar="N")
    group.add_argument("--drop-after-turn", type=int, metavar="N")
    group.add_argument("--drop-after-chunks", type=int, metavar="K")


def emulator_from_args(args: argparse.Namespace) -> GeminiEmulator:
    """Build the emulator, with its faults armed, from parsed flags."""
    config = EmulatorConfig(
        valid_keys=frozenset(args.valid_key) if args.valid_key else None,
        models=None if args.any_model else DEFAULT_MODELS | set(args.model),
        response_delay=args.response_delay,
        reply_seconds=args.reply_seconds,
        pace=args.pace,
        chunk_bytes=args.chunk_bytes,
        vad_threshold=args.vad_threshold,
        silence_ms=args.silence_ms,
        transcript=args.transcript,
        reply_text=args.reply_text,
        handle_lifetime=args.handle_lifetime,
        record_messages=False,
    )
    emulator = GeminiEmulator(config, host=args.host, port=args.port, cert_dir=args.cert_dir)
    _arm_faults(emulator, args)
    return emulator


def _arm_faults(emu: GeminiEmulator, args: argparse.Namespace) -> None:
    if args.go_away_after_turn is not None:
        emu.go_away(time_left=args.go_away_time_left, after_turn=args.go_away_after_turn)
    if args.go_away_after_seconds is not None:
        emu.go_away(time_left=args.go_away_time_left, after_seconds=args.go_away_after_seconds)
    close = (args.close_code, args.close_reason)
    if args.close_after_turn is not None:
        emu.schedule_close(*close, after_turn=args.close_after_turn)
    if args.close_after_chunks is not None:
        emu.schedule_close(*close, after_reply_chunks=args.close_after_chunks)
    if args.stall_after_turn is not None:
        emu.stall(after_turn=args.stall_after_turn)
    if args.drop_after_turn is not None:
        emu.drop(after_turn=args.drop_after_turn)
    if args.drop_after_chunks is not None:
        emu.drop(after_reply_chunks=args.drop_after_chunks)


async def serve_forever(emulator: GeminiEmulator, out: TextIO = sys.stdout) -> None:
    """Start `emulator`, print how to reach it, and serve until cancelled."""
    async with emulator:
        print(f"Gemini Live emulator: {emulator.base_url}", file=out)
        print(f"CA certificate: {emulator.ca_file}", file=out)
        print(
            "Point google-genai at it (SSL_CERT_FILE replaces the default CA bundle):\n"
            f"  SSL_CERT_FILE={emulator.ca_file} GOOGLE_GEMINI_BASE_URL={emulator.base_url}",
            file=out,
            flush=True,
        )
        await emulator.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Run the emulator from the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO" if args.verbose else "WARNING")
    try:
        emulator = emulator_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(emulator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
