"""``talkline talk`` resumes by itself when the network drops between two questions."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from talkline.audio import silence, write_wav
from talkline.emulator import GeminiEmulator
from tests.support import running_gemini_server


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 whose live connections can all be cut at once (no close
    frame reaches either side: both see 1006), while new connections go through."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.transports: list[asyncio.WriteTransport] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.transports += [writer.transport, up_writer.transport]
        pipes = [self._pipe(reader, up_writer), self._pipe(up_reader, writer)]
        await asyncio.gather(*pipes, return_exceptions=True)

    def cut(self) -> None:
        for transport in self.transports:
            transport.abort()
        self.transports.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttableProxy]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.cut()
            self.server.close()
            await self.server.wait_closed()


async def read_lines(process: asyncio.subprocess.Process, into: list[bytes]) -> None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        into.append(line)


async def test_talk_reconnects_by_itself_and_the_conversation_continues(
    weather_pcm: bytes, tmp_path: Path
) -> None:
    """The connection drops after the first answer; talk says it is reconnecting, resumes,
    and the second question is answered as turn 2 of the same Gemini conversation."""
    wav = tmp_path / "two-questions.wav"
    write_wav(wav, weather_pcm + silence(5.0) + weather_pcm + silence(2.5), 16000)
    async with GeminiEmulator(reply_seconds=0.8, response_delay=0.1) as emulator:
        with running_gemini_server(emulator) as server:
            async with CuttableProxy(server.port).running() as proxy:
                talk = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "talkline", "talk", str(wav),
                    "--url", f"ws://127.0.0.1:{proxy.port}/ws",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                printed: list[bytes] = []  # read as it comes, so a hang still shows it
                reading = asyncio.create_task(read_lines(talk, printed))
                await emulator.wait_for(lambda: emulator.recorder.completed_turns >= 1, 60)
                await asyncio.sleep(0.5)
                proxy.cut()
                try:
                    await asyncio.wait_for(talk.wait(), 120)
                except TimeoutError:  # say what talk printed before it hung
                    talk.kill()
                    await talk.wait()
                    text = b"".join(printed).decode()
                    raise AssertionError(f"talk did not finish:\n{text}") from None
                finally:
                    await reading

    text = b"".join(printed).decode()
    assert talk.returncode == 0, text
    assert "connection closed (1006)" in text
    assert "reconnecting…" in text
    assert "reconnected: the conversation continues" in text
    assert "bot: reply 1" in text and "bot: reply 2" in text, text
    last = emulator.connections[-1]
    assert last.resumed_handle is not None
    assert last.conversation == emulator.connections[0].conversation
