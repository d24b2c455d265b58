"""Session leases in Redis: the cluster-wide cap, each change one Lua script.

Data, all under one prefix (a hash tag, so one Redis node holds it all):

- ``<prefix>:leases``: a sorted set, member = session id, score = lease expiry in
  milliseconds of Redis ``TIME``. Its size is the number of sessions counted cluster-wide.
- ``<prefix>:lease:<id>``: a hash ``owner`` (the replica instance holding it), ``key``
  (API key id, or empty) and ``addr`` (client address).
- ``<prefix>:key:<key id>`` and ``<prefix>:addr:<address>``: sets of session ids, for the
  per-API-key and per-address caps.

Every script first purges expired leases (and their hashes and set entries), and takes the
time from Redis, never from a replica's clock, so replicas with skewed clocks agree. Scripts
run atomically: two replicas admitting at once cannot both take the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

PRELUDE = """
local prefix = ARGV[1]
local leases = prefix .. ':leases'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function forget(id)
  local lease = prefix .. ':lease:' .. id
  local fields = redis.call('HMGET', lease, 'key', 'addr')
  if fields[1] and fields[1] ~= '' then redis.call('SREM', prefix .. ':key:' .. fields[1], id) end
  if fields[2] then redis.call('SREM', prefix .. ':addr:' .. fields[2], id) end
  redis.call('DEL', lease)
  redis.call('ZREM', leases, id)
end
local function purge(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do forget(id) end
end
local function hold(id, owner, key, addr, expiry)
  redis.call('ZADD', leases, expiry, id)
  redis.call('HSET', prefix .. ':lease:' .. id, 'owner', owner, 'key', key, 'addr', addr)
  if key ~= '' then redis.call('SADD', prefix .. ':key:' .. key, id) end
  redis.call('SADD', prefix .. ':addr:' .. addr, id)
end
local function owner_of(id)
  return redis.call('HGET', prefix .. ':lease:' .. id, 'owner')
end
"""

# ARGV: prefix, id, owner, key, addr, ttl_ms, total, per_key, per_addr, takeover (0/1).
# Returns {label, count}: label 'ok' or the refusal's label; count = leases held now.
ADMIT = """
local id, owner, key, addr = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
purge(now)
local expiry = now + tonumber(ARGV[6])
if ARGV[10] == '1' and redis.call('ZSCORE', leases, id) then
  forget(id)
  hold(id, owner, key, addr, expiry)
  return {'ok', redis.call('ZCARD', leases)}
end
local count = redis.call('ZCARD', leases)
if count >= tonumber(ARGV[7]) then return {'server-full', count} end
if key ~= '' and redis.call('SCARD', prefix .. ':key:' .. key) >= tonumber(ARGV[8]) then
  return {'key-full', count}
end
if redis.call('SCARD', prefix .. ':addr:' .. addr) >= tonumber(ARGV[9]) then
  return {'address-full', count}
end
hold(id, owner, key, addr, expiry)
return {'ok', count + 1}
"""

# ARGV: prefix, id, owner. Frees the lease if ``owner`` holds it. Returns {freed, count}.
RELEASE = """
local freed = 0
if owner_of(ARGV[2]) == ARGV[3] then
  forget(ARGV[2])
  freed = 1
end
return {freed, redis.call('ZCARD', leases)}
"""

# ARGV: prefix, id, owner, window_ms. The lease expires window_ms from now (Redis time).
DETACH = """
if owner_of(ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('ZADD', leases, now_ms() + tonumber(ARGV[4]), ARGV[2])
return 1
"""

# ARGV: prefix, owner, ttl_ms, then (id, key, addr) for each live session of ``owner``.
# Extends the leases ``owner`` holds; re-adds the ones Redis lost (a restart), whatever the
# cap (they are live). Leases another owner took over are left alone.
# Returns {count, readded}.
RENEW = """
local owner = ARGV[2]
local now = now_ms()
purge(now)
local expiry = now + tonumber(ARGV[3])
local readded = 0
for i = 4, #ARGV, 3 do
  local holder = owner_of(ARGV[i])
  if not holder then
    hold(ARGV[i], owner, ARGV[i + 1], ARGV[i + 2], expiry)
    readded = readded + 1
  elseif holder == owner then
    redis.call('ZADD', leases, expiry, ARGV[i])
  end
end
return {redis.call('ZCARD', leases), readded}
"""

# ARGV: prefix. Purges expired leases; returns the count.
COUNT = """
purge(now_ms())
return redis.call('ZCARD', leases)
"""


@dataclass(frozen=True)
class Lease:
    """One session's claim: its id, API key id (empty when access is off), client address."""

    id: str
    key: str
    addr: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LeaseStore:
    """The lease scripts of one ``owner`` on one Redis, under ``prefix``."""

    def __init__(self, client: Redis, owner: str, prefix: str = "talkline:{cap}"):
        self.client = client
        self.owner = owner
        self.prefix = prefix
        self._admit = client.register_script(PRELUDE + ADMIT)
        self._release = client.register_script(PRELUDE + RELEASE)
        self._detach = client.register_script(PRELUDE + DETACH)
        self._renew = client.register_script(PRELUDE + RENEW)
        self._count = client.register_script(PRELUDE + COUNT)

    async def admit(
        self, lease: Lease, ttl_ms: int, caps: tuple[int, int, int], *, takeover: bool = False
    ) -> tuple[str, int]:
        """``('ok', count)`` with the lease held, or ``(refusal label, count)``.

        ``caps`` is (total, per key, per address). With ``takeover``, an unexpired lease of
        the same id changes owner (and key, address) instead of counting a new session.
        """
        total, per_key, per_addr = caps
        args: list[str | int] = [self.prefix, lease.id, self.owner, lease.key, lease.addr]
        args += [ttl_ms, total, per_key, per_addr, int(takeover)]
        label, count = await self._admit(args=args)
        return _text(label), int(count)

    async def release(self, session_id: str) -> tuple[bool, int]:
        """Free the lease now if this owner holds it: (freed, count)."""
        freed, count = await self._release(args=[self.prefix, session_id, self.owner])
        return bool(freed), int(count)

    async def detach(self, session_id: str, window_ms: int) -> bool:
        """Let this owner's lease expire ``window_ms`` from now (Redis time)."""
        return bool(await self._detach(args=[self.prefix, session_id, self.owner, window_ms]))

    async def renew(self, leases: list[Lease], ttl_ms: int) -> tuple[int, int]:
        """Extend this owner's ``leases`` in one call, re-adding lost ones: (count, readded)."""
        args: list[str | int] = [self.prefix, self.owner, ttl_ms]
        for lease in leases:
            args += [lease.id, lease.key, lease.addr]
        count, readded = await self._renew(args=args)
        return int(count), int(readded)

    async def count(self) -> int:
        return int(await self._count(args=[self.prefix]))
