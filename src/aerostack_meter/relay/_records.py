"""The per-record state the relays share in Redis, so no record id is delivered twice.

``{stream}:rec:{record id}`` holds ``<state>:<stream entry id>[|<Idempotency-Key>]`` with a TTL
(``delivered_ttl``):

* ``T`` taken: a relay read the entry and holds it;
* ``S`` sending: a request carrying it (under that Idempotency-Key) went to the billing API and
  may have been processed;
* ``D`` delivered: the API accepted it (the entry is acknowledged in the same transaction);
* ``X`` dead-lettered: the API refused it for good; it was copied to ``{stream}:dead``.

When a relay reads an entry, :data:`TAKE` answers per entry: ``new`` (first sight: deliver),
``T``, ``S|key``, ``D`` or ``X`` (this same entry was seen before: a restart, or a claim from a
dead relay), or ``dup`` (another entry carries the same record id: an append retried after a lost
answer; the other entry is the one delivered).
"""

from __future__ import annotations

__all__ = ["TAKE", "parse_state"]

TAKE = """
local out = {}
for i, key in ipairs(KEYS) do
  local entry = ARGV[i + 1]
  local v = redis.call('GET', key)
  if not v then
    redis.call('SET', key, 'T:' .. entry, 'PX', ARGV[1])
    out[i] = 'new'
  else
    local body = string.sub(v, 3)
    local bar = string.find(body, '|', 1, true)
    local owner = body
    local extra = ''
    if bar then
      owner = string.sub(body, 1, bar - 1)
      extra = string.sub(body, bar)
    end
    if owner == entry then
      out[i] = string.sub(v, 1, 1) .. extra
    else
      out[i] = 'dup'
    end
  end
end
return out
"""


def parse_state(answer: str) -> tuple[str, str | None]:
    """``"S|am-..."`` -> ``("S", "am-...")``; ``"new"`` -> ``("new", None)``."""
    state, _, key = answer.partition("|")
    return state, key or None
