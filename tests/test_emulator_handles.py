"""The emulator's resumption handles: their lifetime, their refusal while their conversation
is open elsewhere, and the record of which handle each setup carried."""

from __future__ import annotations

import asyncio

import pytest
from google.genai import errors, types

from talkline.emulator import GeminiEmulator
from tests.test_emulator import collect_turn, connect, handle_of, next_matching


async def first_handle(emu: GeminiEmulator) -> str:
    async with connect(emu) as session:
        handle = handle_of(await next_matching(session, handle_of))
    assert handle is not None
    return handle


async def test_a_handle_past_its_lifetime_is_not_found() -> None:
    """An expired handle closes setup with 1008 session not found; the record says why."""
    async with GeminiEmulator(pace=0, reply_seconds=0.2, handle_lifetime=0.2) as emu:
        handle = await first_handle(emu)
        await asyncio.sleep(0.4)
        resumption = types.SessionResumptionConfig(handle=handle)
        with pytest.raises(errors.APIError) as error:
            async with connect(emu, session_resumption=resumption):
                pass
    assert error.value.code == 1008 and "session not found" in str(error.value.details)
    refused = emu.connections[-1]
    assert (refused.presented_handle, refused.resumed_handle) == (handle, None)
    assert refused.handle_refusal == "handle expired"


async def test_a_handle_is_refused_while_its_conversation_is_open_elsewhere() -> None:
    """While the connection that serves the conversation is open, its handle is refused;
    once it has closed, the same handle resumes the conversation."""
    async with GeminiEmulator(pace=0, reply_seconds=0.2) as emu:
        resumption = None
        async with connect(emu) as session:
            handle = handle_of(await next_matching(session, handle_of))
            assert handle is not None
            resumption = types.SessionResumptionConfig(handle=handle)
            with pytest.raises(errors.APIError):
                async with connect(emu, session_resumption=resumption):
                    pass
        async with connect(emu, session_resumption=resumption) as again:
            await again.send_realtime_input(text="two")
            await collect_turn(again)
    open_elsewhere = emu.connections[1]
    assert open_elsewhere.handle_refusal == "conversation still open on another connection"
    assert emu.connections[2].resumed_handle == handle
