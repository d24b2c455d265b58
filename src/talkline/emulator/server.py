"""`GeminiEmulator`: a loopback Gemini Live API server for the real google-genai SDK."""

from __future__ import annotations

import http
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from google.genai import types
from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from . import tls, wire
from .connection import LiveConnection
from .faults import Fault, FaultKind
from .loopback import WebSocketServer
from .records import ConnectionRecord, Recorder, TurnRecord, safe_headers
from .state import EmulatorConfig, Shared

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class GeminiEmulator(WebSocketServer):
    """Serves the BidiGenerateContent WebSocket over TLS on a loopback port.

    Use as `async with GeminiEmulator(pace=0, reply_seconds=0.3) as emu:` and connect with
    `genai.Client(api_key=..., http_options=emu.http_options())`. Keyword options are the
    fields of `EmulatorConfig`; `config` is live, so tests may change it between turns.
    """

    session_class: type[LiveConnection] = LiveConnection
    scheme = "https"  # `base_url` is for `HttpOptions.base_url`
    server_header = "talkline-gemini-emulator"

    recorder: Recorder  # everything recorded so far

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: Path | str | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either config or keyword options, not both")
        self.config = config or EmulatorConfig(**options)
        self._shared = Shared(self.config)
        super().__init__(host=host, port=port, recorder=self._shared.recorder)
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._certs: tls.CertFiles | None = None
        self._sessions: set[LiveConnection] = set()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Make the certificate and start listening."""
        directory = self._cert_dir
        if directory is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="gemini-emulator-")
            directory = Path(self._tempdir.name)
        self._certs = tls.make_cert_files(directory, self.host)
        await super().start()
        logger.info("Gemini emulator listening on {}", self.base_url)

    async def stop(self) -> None:
        """Close every connection (1001), stop listening and delete a temporary cert dir."""
        await super().stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None, "call start() first"
        await self._server.serve_forever()

    def _serve_options(self) -> dict[str, Any]:
        assert self._certs is not None
        return {"ssl": tls.server_context(self._certs), "max_size": MAX_MESSAGE_BYTES}

    # -- how to connect -----------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the emulator's certificate."""
        assert self._certs is not None, "the emulator is not started"
        return self._certs.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS context that trusts the emulator."""
        return tls.client_context(self.ca_file)

    def http_options(self, **overrides: Any) -> types.HttpOptions:
        """`HttpOptions` that point the google-genai SDK at this emulator."""
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "async_client_args": {"ssl": self.ssl_context()},
        }
        return types.HttpOptions(**(options | overrides))

    def ws_url(self, api_version: str = "v1beta", method: str = "BidiGenerateContent") -> str:
        """Full `wss://` URL of the endpoint, for raw WebSocket clients."""
        service = f"google.ai.generativelanguage.{api_version}.GenerativeService.{method}"
        return f"wss://{self.host}:{self.port}/ws/{service}"

    # -- faults -------------------------------------------------------------

    @property
    def faults(self) -> list[Fault]:
        """Pending and fired faults; append a `Fault` or use the helpers below."""
        return self._shared.faults

    def add_fault(self, fault: Fault) -> Fault:
        """Arm `fault`; it fires at most once."""
        self._shared.faults.append(fault)
        return fault

    def go_away(self, *, time_left: float = 1.0, **trigger: Any) -> Fault:
        """Send goAway(timeLeft) at the trigger, then close 1011 once the time is up."""
        return self.add_fault(Fault(FaultKind.GO_AWAY, time_left=time_left, **trigger))

    def schedule_close(self, code: int, reason: str, **trigger: Any) -> Fault:
        """Close with `code` and `reason` at the trigger."""
        return self.add_fault(Fault(FaultKind.CLOSE, code=code, reason=reason, **trigger))

    def stall(self, **trigger: Any) -> Fault:
        """Stop answering at the trigger (input is still read and recorded)."""
        return self.add_fault(Fault(FaultKind.STALL, **trigger))

    def drop(self, **trigger: Any) -> Fault:
        """Abort the TCP connection, with no close frame, at the trigger."""
        return self.add_fault(Fault(FaultKind.DROP, **trigger))

    # -- recordings ---------------------------------------------------------

    @property
    def connections(self) -> list[ConnectionRecord]:
        """One record per accepted WebSocket connection, in order."""
        return self.recorder.connections

    @property
    def turns(self) -> list[TurnRecord]:
        """Every user turn over all connections."""
        return self.recorder.turns

    @property
    def audio_bytes(self) -> int:
        """User audio bytes received over all connections."""
        return self.recorder.audio_bytes

    async def wait_for_turns(self, count: int, within: float = 5.0) -> None:
        """Wait until `count` replies have ended with turnComplete."""
        await self.wait_for(lambda: self.recorder.completed_turns >= count, within)

    async def wait_for_connections(self, count: int, within: float = 5.0) -> None:
        """Wait until `count` connections have been opened."""
        await self.wait_for(lambda: len(self.connections) >= count, within)

    # -- connections --------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if wire.parse_endpoint(request.path, request.headers) is None:
            logger.info("refused unknown path {}", wire.redact_path(request.path))
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        endpoint = wire.parse_endpoint(request.path, request.headers)
        assert endpoint is not None
        record = ConnectionRecord(
            index=len(self.connections),
            path=wire.redact_path(request.path),
            api_version=endpoint.api_version,
            method=endpoint.method,
            key_source=endpoint.key_source,
            headers=safe_headers(request.headers),
            opened_at=time.monotonic(),
        )
        self.connections.append(record)
        session = self.session_class(ws, self._shared, record, endpoint.api_key)
        self._session_started(session)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def _session_started(self, session: LiveConnection) -> None:
        """A hook for subclasses: the bench's emulator records audio arrivals here."""
