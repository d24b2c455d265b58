"""The resume registry: what a conversation needs to continue on a new socket, anywhere.

Per conversation: its owner replica, an epoch, the newest Gemini resumption handle, when it
started (wall clock), a hash of its resume secret (never the secret), the API key id it
belongs to, and a bounded transcript (to seed a fresh upstream session if Gemini refuses the
handle). The entry lives for the resume window after its owner last said it is alive.

The epoch fences owners: a claim bumps it, and every later write (handle, keep-alive, end)
names the epoch it holds; a write with an old epoch is refused, so an old owner that wakes
up finds out it no longer owns the conversation. Two implementations: in this process
(``LocalResumeRegistry``, the default) and Redis (``RedisResumeRegistry``, when
``TALKLINE_REDIS_URL`` is set), where claim and fenced writes are each one Lua script.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, cast

TRANSCRIPT_MESSAGES = 40  # the newest messages kept to seed a fresh upstream session
KEY_PREFIX = "talkline:resume:"
SIGNING_KEY = "talkline:resume-signing-key"  # signs resume tokens when no token secret is set

Transcript = list[dict[str, str]]


class ResumeProblem(Enum):
    """Why a resume is refused: label, HTTP status at /connect."""

    GONE = ("resume-window-over", 410, "the conversation can no longer be resumed")
    FORBIDDEN = ("resume-forbidden", 403, "this resume secret does not open that conversation")
    STALE = ("resume-token-used", 410, "this resume token was already used")

    def __init__(self, label: str, http_status: int, words: str):
        self.label = label
        self.http_status = http_status
        self.words = words


class Hold(Enum):
    """What an owner's fenced write found."""

    KEPT = "kept"  # the epoch still owns the conversation: written
    FENCED = "fenced"  # another owner took over: this one must let go
    LOST = "lost"  # the registry forgot it (Redis restarted empty): the owner writes it anew


class ResumeRefused(Exception):
    """A claim or check that failed; ``problem`` says why (never with the secret)."""

    def __init__(self, problem: ResumeProblem):
        super().__init__(problem.words)
        self.problem = problem


@dataclass
class Conversation:
    """One resumable conversation as the registry holds it."""

    session_id: str
    owner: str
    secret_hash: str
    key_id: str = ""
    started: float = field(default_factory=time.time)  # wall clock: replicas compare it
    epoch: int = 1
    handle: str = ""
    transcript: Transcript = field(default_factory=list)
    last_active: float = 0.0  # wall clock of the last speech either side (0: the start)


def new_secret(session_id: str) -> str:
    """An opaque resume secret; it names its conversation so any replica can look it up."""
    return f"{session_id}.{secrets.token_urlsafe(24)}"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def session_of(secret: str) -> str:
    return secret.partition(".")[0]


def bounded(transcript: Transcript) -> Transcript:
    return transcript[-TRANSCRIPT_MESSAGES:]


class ResumeRegistry(Protocol):
    """Where resumable conversations live; every write after ``create`` is fenced by epoch."""

    name: str  # "local" or "redis", for /health
    shared: bool  # whether other replicas see it (a SIGTERM hand-off makes sense)
    window: float

    async def create(self, conversation: Conversation) -> None: ...

    async def check(self, secret: str, key_id: str) -> Conversation:
        """The conversation ``secret`` opens for ``key_id``; raises ``ResumeRefused``."""
        ...

    async def claim(self, session_id: str, epoch: int, owner: str, new_hash: str) -> Conversation:
        """Take over at ``epoch`` (bumped by one, secret rotated); raises ``ResumeRefused``."""
        ...

    async def store(self, session_id: str, epoch: int, handle: str, transcript: Transcript) -> Hold:
        """The newest handle and transcript, if ``epoch`` still owns the conversation."""
        ...

    async def keep_alive(
        self, session_id: str, epoch: int, last_active: float | None = None
    ) -> Hold:
        """The owner is alive: the window starts again, if ``epoch`` still owns it; with
        ``last_active``, when someone last spoke (a resume's idle timeout counts from it)."""
        ...

    async def end(self, session_id: str, epoch: int) -> None:
        """The conversation is over (a normal close): forget it, if still the owner."""
        ...

    async def close(self) -> None: ...


def verify(conversation: Conversation | None, secret: str, key_id: str) -> Conversation:
    if conversation is None:
        raise ResumeRefused(ResumeProblem.GONE)
    if conversation.secret_hash != secret_hash(secret) or conversation.key_id != key_id:
        raise ResumeRefused(ResumeProblem.FORBIDDEN)
    return conversation


class LocalResumeRegistry:
    """In this process: resume works on the same server. ``clock`` is monotonic seconds."""

    name = "local"
    shared = False

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self._clock = clock
        self._entries: dict[str, tuple[Conversation, float]] = {}

    def _get(self, session_id: str) -> Conversation | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._entries[session_id]
            return None
        return entry[0]

    def _put(self, conversation: Conversation) -> None:
        self._entries[conversation.session_id] = (conversation, self._clock() + self.window)

    def _owned(self, session_id: str, epoch: int) -> Conversation | None:
        conversation = self._get(session_id)
        return conversation if conversation and conversation.epoch == epoch else None

    def _hold(self, session_id: str, epoch: int) -> tuple[Hold, Conversation | None]:
        conversation = self._get(session_id)
        if conversation is None:
            return Hold.LOST, None
        if conversation.epoch != epoch:
            return Hold.FENCED, None
        return Hold.KEPT, conversation

    async def create(self, conversation: Conversation) -> None:
        now = self._clock()  # forget conversations whose window is over, nobody asked
        for session_id in [k for k, (_, ends) in self._entries.items() if now >= ends]:
            del self._entries[session_id]
        self._put(conversation)

    async def check(self, secret: str, key_id: str) -> Conversation:
        return verify(self._get(session_of(secret)), secret, key_id)

    async def claim(self, session_id: str, epoch: int, owner: str, new_hash: str) -> Conversation:
        conversation = self._get(session_id)
        if conversation is None:
            raise ResumeRefused(ResumeProblem.GONE)
        if conversation.epoch != epoch:
            raise ResumeRefused(ResumeProblem.STALE)
        conversation.epoch, conversation.owner = epoch + 1, owner
        conversation.secret_hash = new_hash
        self._put(conversation)
        return Conversation(**vars(conversation) | {"transcript": list(conversation.transcript)})

    async def store(self, session_id: str, epoch: int, handle: str, transcript: Transcript) -> Hold:
        hold, conversation = self._hold(session_id, epoch)
        if conversation is not None:
            conversation.handle, conversation.transcript = handle, bounded(transcript)
            self._put(conversation)
        return hold

    async def keep_alive(
        self, session_id: str, epoch: int, last_active: float | None = None
    ) -> Hold:
        hold, conversation = self._hold(session_id, epoch)
        if conversation is not None:
            if last_active is not None:
                conversation.last_active = last_active
            self._put(conversation)
        return hold

    async def end(self, session_id: str, epoch: int) -> None:
        if self._owned(session_id, epoch) is not None:
            del self._entries[session_id]

    async def close(self) -> None:
        self._entries.clear()


# --- Redis: one hash per conversation, with a TTL of the window ---------------------------

CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'secret_hash', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""
# The fenced writes answer 1 (kept), 0 (fenced: another epoch) or -1 (lost: no entry).
STORE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return -1 end
if epoch ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'handle', ARGV[2], 'transcript', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
KEEP_ALIVE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return -1 end
if epoch ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'last_active', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
HOLDS = {1: Hold.KEPT, 0: Hold.FENCED, -1: Hold.LOST}
END = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def from_hash(values: dict[str, str]) -> Conversation:
    return Conversation(
        session_id=values["session_id"],
        owner=values["owner"],
        secret_hash=values["secret_hash"],
        key_id=values.get("key_id", ""),
        started=float(values["started"]),
        epoch=int(values["epoch"]),
        last_active=float(values.get("last_active") or 0.0),
        handle=values.get("handle", ""),
        transcript=json.loads(values.get("transcript") or "[]"),
    )


def to_hash(conversation: Conversation) -> dict[str, str]:
    values = {k: str(v) for k, v in vars(conversation).items() if k != "transcript"}
    return values | {"transcript": json.dumps(conversation.transcript)}


class RedisResumeRegistry:
    """In Redis, shared by replicas; ``calls`` counts round trips (for the report)."""

    name = "redis"
    shared = True

    def __init__(self, url: str, window: float, client: Any = None):
        import redis.asyncio as redis  # only when used

        self.window = window
        self._redis = client or redis.from_url(url, decode_responses=True)
        self._claim = self._redis.register_script(CLAIM)
        self._store = self._redis.register_script(STORE)
        self._keep_alive = self._redis.register_script(KEEP_ALIVE)
        self._end = self._redis.register_script(END)
        self.calls = 0

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.window * 1000))

    async def create(self, conversation: Conversation) -> None:
        """Write the entry (MULTI: HSET, PEXPIRE). redis-py retries single commands on a
        connection Redis dropped, not transactions: after Redis restarts, the first one on
        each pooled connection fails. Writing the same entry again is harmless, so a
        dropped connection is tried once more, on a fresh one."""
        from redis.exceptions import ConnectionError as Dropped  # only when used

        self.calls += 1
        key = KEY_PREFIX + conversation.session_id
        mapping: dict[Any, Any] = to_hash(conversation)
        for last in (False, True):
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.hset(key, mapping=mapping)
                    pipe.pexpire(key, self._ttl_ms)
                    await pipe.execute()
                return
            except Dropped:
                if last:
                    raise

    async def check(self, secret: str, key_id: str) -> Conversation:
        self.calls += 1
        values = cast(dict[str, str], await self._redis.hgetall(KEY_PREFIX + session_of(secret)))
        return verify(from_hash(values) if values else None, secret, key_id)

    async def claim(self, session_id: str, epoch: int, owner: str, new_hash: str) -> Conversation:
        self.calls += 1
        args: list[str | int] = [epoch, owner, new_hash, self._ttl_ms]
        reply = await self._claim(keys=[KEY_PREFIX + session_id], args=args)
        if reply == ["gone"]:
            raise ResumeRefused(ResumeProblem.GONE)
        if reply == ["stale"]:
            raise ResumeRefused(ResumeProblem.STALE)
        return from_hash(dict(zip(reply[::2], reply[1::2], strict=True)))

    async def store(self, session_id: str, epoch: int, handle: str, transcript: Transcript) -> Hold:
        self.calls += 1
        args: list[str | int] = [epoch, handle, json.dumps(bounded(transcript)), self._ttl_ms]
        return HOLDS[int(await self._store(keys=[KEY_PREFIX + session_id], args=args))]

    async def keep_alive(
        self, session_id: str, epoch: int, last_active: float | None = None
    ) -> Hold:
        self.calls += 1
        args: list[str | int] = [
            epoch,
            self._ttl_ms,
            "" if last_active is None else repr(last_active),
        ]
        return HOLDS[int(await self._keep_alive(keys=[KEY_PREFIX + session_id], args=args))]

    async def end(self, session_id: str, epoch: int) -> None:
        self.calls += 1
        await self._end(keys=[KEY_PREFIX + session_id], args=[epoch])

    async def signing_key(self) -> bytes:
        """The key every replica on this Redis signs resume tokens with, so a token minted
        by one replica's /connect opens /ws on another. The first replica to ask makes it."""
        self.calls += 1
        await self._redis.set(SIGNING_KEY, secrets.token_hex(32), nx=True)
        return bytes.fromhex(str(await self._redis.get(SIGNING_KEY)))

    async def close(self) -> None:
        await self._redis.aclose()


def build_registry(redis_url: str | None, window: float) -> ResumeRegistry:
    """Redis when a URL is given, else this process alone."""
    if redis_url:
        return RedisResumeRegistry(redis_url, window)
    return LocalResumeRegistry(window)
