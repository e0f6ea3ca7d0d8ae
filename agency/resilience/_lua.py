"""The Redis scripts behind `agency.resilience.shared`: each one atomic, on Redis's clock.

One library of Lua functions (a breaker, a limiter, a budget, counters), each mirroring the
in-process class it shares (same rules, same states: their docstrings hold the contract), and
one entry script per use: the four single ones for the classes' own methods, `ADMIT` (breaker,
limiter and budget in one round trip before a call, after this process's queued writes) and
`BATCH` (queued writes alone: verdicts, refunds, settlements, counters; each group once).

Every script reads the time from Redis (``TIME``), so processes on machines whose clocks
disagree still share one clock. Numbers go back as strings: Redis turns Lua numbers into
integers, which would cut every fraction of a second.
"""

from __future__ import annotations

__all__ = [
    "ADMIT",
    "BATCH",
    "BREAKER",
    "BUDGET",
    "LIMITER",
    "ONCE_BUCKET",
    "ONCE_KEEP_S",
    "STATS",
]

ONCE_BUCKET = 65536
"""Group numbers noted per key (see ``writes``): one bit each, so a key is at most 8 KiB."""

ONCE_KEEP_S = 3600
"""How long Redis keeps a note that it ran a group of queued writes: a group sent again
later than this after its first try (its answer lost, the store down since) may run twice."""

_LIBRARY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- What one script run has read, so the admission after this process's queued writes reads
-- the same breaker and limiter once: breaker state by hash, limiter (see load) by hash.
local states, limiters = {}, {}

-- A breaker policy travels as one argument, its numbers joined by '|' (one value to encode),
-- read only when needed: a closed breaker's common verdicts need its window alone.
local policies = {}
local function window_of(packed) return tonumber(string.match(packed, '^[^|]+')) end
local function policy(packed)
  if policies[packed] then return policies[packed] end
  local n = {}
  for part in string.gmatch(packed, '[^|]+') do table.insert(n, tonumber(part)) end
  policies[packed] = {window = n[1], window_s = n[2], min_calls = n[3], rate = n[4],
                      consecutive = n[5], base = n[6], max_cd = n[7], probes = n[8],
                      max_ra = n[9], growth = n[10]}
  return policies[packed]
end

-- A breaker's outcomes: the list keeps at least the newest `window` ("time|failed"), trimmed
-- once it holds twice that; only those, and only the ones younger than window_s, count.
local function record(w, window, failed)
  if redis.call('RPUSH', w, tostring(now) .. (failed and '|1' or '|0')) > 2 * window then
    redis.call('LTRIM', w, -window, -1)
  end
end

-- A breaker: hash h, outcomes list w ("time|failed", oldest first), its policy packed (see
-- policy). Returns {allowed, state, retry_in, cooldown, probes, consecutive, trips, reason,
-- failures, successes, opened_ago}.
local function breaker(h, w, op, packed, seconds)
  local st = states[h]
  if st == nil then
    local f = redis.call('HMGET', h, 'st', 'cons')
    st = {f[1] or 'closed', f[2] or '0'}
    states[h] = st
  end
  if op == 'allow' and st[1] == 'closed' then return {'1', 'closed'} end
  if op == 'success' and st[1] == 'closed' then
    -- The common verdict: only the run of failures (cons) and the outcomes change.
    record(w, window_of(packed), false)
    if st[2] ~= '0' then redis.call('HSET', h, 'cons', 0); st[2] = '0' end
    return {'0', 'closed'}
  end
  local p = policy(packed)
  st = st[1]
  local f = redis.call('HMGET', h, 'until', 'cd', 'pr', 'cons', 'lastf', 'trips', 'reason', 'at')
  local untl, cd, pr = tonumber(f[1]) or 0, tonumber(f[2]) or p.base, tonumber(f[3]) or 0
  local cons, lastf, trips = tonumber(f[4]) or 0, tonumber(f[5]) or -1e18, tonumber(f[6]) or 0
  local reason, at = f[7] or '', f[8] or ''
  if st == 'open' and now >= untl then st = 'half_open'; pr = 0 end

  local function trip(duration, why)
    st = 'open'; at = tostring(now); untl = now + duration; pr = 0; trips = trips + 1
    reason = why
  end
  local function outcomes()
    local kept, failures = {}, 0
    for _, item in ipairs(redis.call('LRANGE', w, -p.window, -1)) do
      local sep = string.find(item, '|', 1, true)
      if tonumber(string.sub(item, 1, sep - 1)) >= now - p.window_s then
        table.insert(kept, item)
        if string.sub(item, sep + 1) == '1' then failures = failures + 1 end
      end
    end
    return kept, failures
  end
  local function fail()
    record(w, p.window, true)
    local kept, failures = outcomes()
    return #kept, failures
  end
  local function open_for(s)
    if not (s > 0) then return end
    if s > p.max_ra then s = p.max_ra end
    if st == 'open' then
      if now + s > untl then untl = now + s; reason = 'retry-after ' .. s .. 's' end
    else
      trip(s, 'retry-after ' .. s .. 's')
    end
  end

  local allowed = '0'
  if op == 'allow' then
    if st == 'half_open' and pr < p.probes then pr = pr + 1; allowed = '1' end
  elseif op == 'success' then  -- (closed: returned above)
    if st == 'half_open' then
      st = 'closed'; redis.call('DEL', w); cons = 0; lastf = -1e18; cd = p.base; pr = 0; untl = 0
    end
  elseif op == 'failure' then
    if st == 'closed' then
      if now - lastf > p.window_s then cons = 0 end
      cons = cons + 1; lastf = now
      local total, failures = fail()
      if cons >= p.consecutive then
        trip(cd, cons .. ' failures in a row')
      elseif total >= p.min_calls and failures >= p.rate * total then
        trip(cd, failures .. ' of the last ' .. total .. ' calls failed')
      end
    elseif st == 'half_open' then
      cd = math.min(cd * p.growth, p.max_cd)
      trip(cd, 'half-open probe failed')
    end
    if seconds > 0 then open_for(seconds) end
  elseif op == 'release' then
    if pr > 0 then pr = pr - 1 end
  elseif op == 'open_for' then
    open_for(seconds)
  elseif op == 'force_open' then
    trip(seconds, 'forced open')
  elseif op == 'force_closed' then
    st = 'closed'; redis.call('DEL', w); cons = 0; lastf = -1e18; cd = p.base; pr = 0; untl = 0
    reason = 'forced closed'
  end
  if op ~= 'read' then
    states[h] = {st, tostring(cons)}
    redis.call('HSET', h, 'st', st, 'until', tostring(untl), 'cd', tostring(cd), 'pr', pr,
               'cons', cons, 'lastf', tostring(lastf), 'trips', trips, 'reason', reason, 'at', at)
    if op ~= 'allow' then return {allowed, st} end  -- a verdict: nobody reads the answer
  end
  local kept, failures = outcomes()
  return {allowed, st, tostring(math.max(0, untl - now)), tostring(cd), tostring(pr),
          tostring(cons), tostring(trips), reason, tostring(failures),
          tostring(#kept - failures), at == '' and '' or tostring(now - tonumber(at))}
end

-- A limiter: hash h with buckets rl/rs, tl/ts, 'blocked' (until) and server windows
-- 'w:<family>' = kind|remaining|reported|limit|until. Read once per script (load), written
-- back only when something changed (save). Its TTL (a day) is renewed hourly, not per save.
local function load(h, rpm, tpm)
  if limiters[h] then return limiters[h] end
  local f = {}
  local all = redis.call('HGETALL', h)
  for i = 1, #all, 2 do f[all[i]] = all[i + 1] end
  local function bucket(level, stamp, cap)
    level, stamp = tonumber(level), tonumber(stamp)
    if level == nil then return cap end
    if now > stamp then level = math.min(cap, level + (now - stamp) * cap / 60) end
    return level
  end
  local l = {h = h, rpm = rpm, tpm = tpm, windows = {},
             rl = rpm > 0 and bucket(f.rl, f.rs, rpm) or 0,
             tl = tpm > 0 and bucket(f.tl, f.ts, tpm) or 0,
             blocked = tonumber(f.blocked) or 0, renewed = tonumber(f.x) or 0}
  for field, value in pairs(f) do
    if string.sub(field, 1, 2) == 'w:' then
      local parts = {}
      for part in string.gmatch(value, '[^|]+') do table.insert(parts, part) end
      local win = {kind = parts[1], remaining = tonumber(parts[2]),
                   reported = tonumber(parts[3]), limit = tonumber(parts[4]),
                   untl = tonumber(parts[5])}
      if now < win.untl then l.windows[field] = win else redis.call('HDEL', h, field) end
    end
  end
  limiters[h] = l
  return l
end

local function save(l)
  local fields = {}
  if l.rpm > 0 then table.insert(fields, 'rl'); table.insert(fields, tostring(l.rl))
                    table.insert(fields, 'rs'); table.insert(fields, tostring(now)) end
  if l.tpm > 0 then table.insert(fields, 'tl'); table.insert(fields, tostring(l.tl))
                    table.insert(fields, 'ts'); table.insert(fields, tostring(now)) end
  for key, win in pairs(l.windows) do
    table.insert(fields, key)
    table.insert(fields, win.kind .. '|' .. win.remaining .. '|' .. win.reported .. '|'
                 .. win.limit .. '|' .. win.untl)
  end
  local renew = now - l.renewed > 3600
  if renew then
    l.renewed = now
    table.insert(fields, 'x'); table.insert(fields, tostring(now))
  end
  if #fields > 0 then redis.call('HSET', l.h, unpack(fields)) end
  if renew then redis.call('EXPIRE', l.h, 86400) end
end

-- The wait in seconds before `tokens` may go (0: now).
local function wait_for(l, tokens)
  local need = tokens > 1 and tokens or 1
  local wait = l.blocked - now
  if l.rpm > 0 and l.rl < 1 then wait = math.max(wait, (1 - l.rl) / (l.rpm / 60)) end
  if l.tpm > 0 then
    local deficit = math.min(need, l.tpm) - l.tl
    if deficit > 0 then wait = math.max(wait, deficit / (l.tpm / 60)) end
  end
  for _, win in pairs(l.windows) do
    local n = win.kind == 'requests' and 1 or need
    if win.limit >= 0 then n = math.min(n, win.limit) end
    if n > win.remaining then wait = math.max(wait, win.untl - now) end
  end
  if wait < 1e-9 then wait = 0 end
  return wait
end

local function take(l, tokens)
  if l.rpm > 0 then l.rl = l.rl - 1 end
  if l.tpm > 0 then l.tl = l.tl - tokens end
  for _, win in pairs(l.windows) do
    win.remaining = win.remaining - (win.kind == 'requests' and 1 or tokens)
  end
  save(l)
end

-- One limiter operation. 'take'/'wait' return the wait in seconds as a string (0: taken);
-- the other ops return {requests, tokens, blocked_for, window...}.
local function limiter(h, op, rpm, tpm, tokens, extra)
  local l = load(h, rpm, tpm)
  if op == 'take' or op == 'wait' then
    local wait = wait_for(l, tokens)
    if op == 'take' and wait == 0 then take(l, tokens) end
    return tostring(wait)
  elseif op == 'settle' then
    -- Only tokens come back: without a tpm or a token window nothing changes.
    local changed = l.tpm > 0
    if l.tpm > 0 then l.tl = math.min(l.tpm, l.tl + tokens) end
    for _, win in pairs(l.windows) do
      if win.kind == 'tokens' then
        win.remaining = math.min(win.reported, win.remaining + tokens)
        changed = true
      end
    end
    if changed then save(l) end
  elseif op == 'block' then
    l.blocked = math.max(l.blocked, now + tokens)
    redis.call('HSET', h, 'blocked', tostring(l.blocked))
  elseif op == 'observe' then
    local retry_after = tonumber(extra[1])
    local i = 2
    while extra[i] do
      local remaining = tonumber(extra[i + 2])
      l.windows['w:' .. extra[i]] = {kind = extra[i + 1], remaining = remaining,
                                     reported = remaining, limit = tonumber(extra[i + 3]),
                                     untl = now + tonumber(extra[i + 4])}
      i = i + 5
    end
    if retry_after >= 0 then
      l.blocked = math.max(l.blocked, now + retry_after)
      redis.call('HSET', h, 'blocked', tostring(l.blocked))
    end
    save(l)
  end
  local out = {tostring(l.rl), tostring(l.tl), tostring(math.max(0, l.blocked - now))}
  for key, win in pairs(l.windows) do
    table.insert(out, string.sub(key, 3) .. '|' .. win.kind .. '|' .. win.remaining .. '|'
                 .. win.limit .. '|' .. (win.untl - now))
  end
  return out
end

-- A budget's counters change by deltas, summed per hash and field and written once when the
-- script ends (`written`): the settlement an admission carries in front of the next hold
-- mostly cancels out with it (5 HINCRBYs become 1). Reads add what is pending.
local deltas = {}
local function add(h, field, n)
  local d = deltas[h]
  if d == nil then d = {}; deltas[h] = d end
  d[field] = (d[field] or 0) + n
end
local function pending(h, field)
  local d = deltas[h]
  return d and d[field] or 0
end
local function written(only)  -- the pending deltas of hash `only` (nil: of every hash)
  for h, d in pairs(deltas) do
    if only == nil or h == only then
      for field, n in pairs(d) do
        if n ~= 0 then redis.call('HINCRBY', h, field, n) end
      end
      deltas[h] = nil
    end
  end
end

-- A budget: hash h with 'spent', 'reserved', 'spent:<role>', 'reserved:<role>', counters;
-- nanodollars. 'reserve' returns {} when held, else {scope, limit, left}.
local function budget(h, op, nanos, role, role_limit, total_limit, actual)
  if op == 'reserve' then
    local function left_of(limit, spent, reserved)
      local v = redis.call('HMGET', h, spent, reserved)
      return limit - ((tonumber(v[1]) or 0) + pending(h, spent))
                   - ((tonumber(v[2]) or 0) + pending(h, reserved))
    end
    if role ~= '' and role_limit >= 0 then
      local left = left_of(role_limit, 'spent:' .. role, 'reserved:' .. role)
      if nanos > left then
        add(h, 'refused', 1)
        return {'role:' .. role, tostring(role_limit), tostring(left)}
      end
    end
    if total_limit >= 0 then
      local left = left_of(total_limit, 'spent', 'reserved')
      if nanos > left then
        add(h, 'refused', 1)
        return {'total', tostring(total_limit), tostring(left)}
      end
    end
    add(h, 'reserved', nanos)
    if role ~= '' then add(h, 'reserved:' .. role, nanos) end
    add(h, 'open', 1)
    return {}
  elseif op == 'close' then
    add(h, 'reserved', -nanos)
    add(h, 'spent', actual)
    if role ~= '' then
      add(h, 'reserved:' .. role, -nanos)
      add(h, 'spent:' .. role, actual)
    end
    add(h, 'open', -1)
    return {}
  end
  written(h)  -- what follows reads the hash as it is
  if op == 'seed' then
    -- What was spent before this hash existed (e.g. a key's spend kept on disk), once.
    redis.call('HSETNX', h, 'spent', actual)
    return {}
  end
  return redis.call('HGETALL', h)
end

local function stats(h, argv, from)
  for i = from, #argv, 2 do redis.call('HINCRBY', h, argv[i], argv[i + 1]) end
end

-- Queued writes, in order, as one JSON argument: a list of groups [number, notes key index,
-- writes], each write [kind, key indexes, arguments] (kind BREAKER, LIMITER, BUDGET or
-- STATS; the indexes point into KEYS, each key given once). Each write runs as its own
-- script would. A group runs once: its number is noted as a bit of KEYS[notes] (a bitmap per
-- @BUCKET@ numbers, kept @KEEP@ s; SETBIT says whether it was there), and a group sent again
-- whose number is there (Redis ran it, and its answer was lost) is skipped.
local function writes(keys, packed)
  if not packed then return end
  for _, group in ipairs(cjson.decode(packed)) do
    local number, notes = group[1], keys[group[2]]
    local bit = number % @BUCKET@
    if redis.call('SETBIT', notes, bit, 1) == 0 then
      if bit < 2 then redis.call('EXPIRE', notes, @KEEP@) end  -- (a new key)
      for _, w in ipairs(group[3]) do
        local kind, k, a = w[1], w[2], w[3]
        if kind == 'BREAKER' then
          breaker(keys[k[1]], keys[k[2]], a[1], a[3], tonumber(a[2]))
        elseif kind == 'LIMITER' then
          local extra = {}
          for j = 5, #a do table.insert(extra, a[j]) end
          limiter(keys[k[1]], a[1], tonumber(a[2]), tonumber(a[3]), tonumber(a[4]), extra)
        elseif kind == 'BUDGET' then
          budget(keys[k[1]], a[1], tonumber(a[2]), a[3], tonumber(a[4]), tonumber(a[5]),
                 tonumber(a[6] or 0))
        elseif kind == 'STATS' then
          stats(keys[k[1]], a, 1)
        end
      end
    end
  end
end
""".replace("@BUCKET@", str(ONCE_BUCKET)).replace("@KEEP@", str(ONCE_KEEP_S))

BREAKER = (
    _LIBRARY
    + """
-- KEYS: hash, outcomes. ARGV: op, seconds, policy.
return breaker(KEYS[1], KEYS[2], ARGV[1], ARGV[3], tonumber(ARGV[2]))
"""
)
"""One breaker call (`CircuitBreaker`'s methods)."""

LIMITER = (
    _LIBRARY
    + """
-- KEYS: hash. ARGV: op, rpm (0: none), tpm (0: none), tokens, then for 'observe':
-- retry_after (-1: none) and 5 values per window (family kind remaining limit reset).
local extra = {}
for i = 5, #ARGV do table.insert(extra, ARGV[i]) end
return limiter(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), extra)
"""
)
"""One limiter call (`RateLimiter`'s methods)."""

BUDGET = (
    _LIBRARY
    + """
-- KEYS: hash. ARGV: op, nanos, role ('' for none), role limit (-1), total limit (-1), actual.
local answer = budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
                      tonumber(ARGV[5]), tonumber(ARGV[6] or '0'))
written()
return answer
"""
)
"""One budget call (`Budget`'s methods)."""

STATS = (
    _LIBRARY
    + """
-- KEYS: the provider's counters. ARGV: field, increment pairs.
stats(KEYS[1], ARGV, 1)
return 1
"""
)
"""Counters of one provider across the fleet."""

BATCH = (
    _LIBRARY
    + """
-- KEYS: the writes' keys. ARGV: the writes (see writes).
writes(KEYS, ARGV[1])
written()
return 1
"""
)
"""Queued writes of any kind, in order, in one script (one command per round trip)."""

ADMIT = (
    _LIBRARY
    + """
-- Before a call, in one round trip: the breaker lets it through, the limiter has room, the
-- budget holds its worst case; all three or none (nothing is taken from the others when one
-- says no).
-- KEYS: breaker hash, breaker outcomes, limiter hash, budget hash, then the other keys of
--       the queued writes, which run first (as BATCH runs them).
-- ARGV: breaker policy, rpm, tpm, tokens, nanos (-1: no budget), role, role limit,
--       total limit, the queued writes (optional, see writes).
-- Returns {'ok', breaker state} | {'breaker', retry_in, state, probes, cooldown}
--       | {'limiter', wait} | {'budget', scope, limit, left}.
local function admit()
  writes(KEYS, ARGV[9])  -- this process's queued writes first: it reads its own writes
  local packed_policy = ARGV[1]  -- (`breaker` parses it only when it needs more)
  local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local nanos = tonumber(ARGV[5])
  local b = breaker(KEYS[1], KEYS[2], 'allow', packed_policy, 0)
  if b[1] ~= '1' then
    local full = breaker(KEYS[1], KEYS[2], 'read', packed_policy, 0)
    return {'breaker', full[3], full[2], full[5], full[4]}
  end
  local function give_back()
    if b[2] ~= 'closed' then breaker(KEYS[1], KEYS[2], 'release', packed_policy, 0) end
  end
  local l = load(KEYS[3], rpm, tpm)
  local wait = wait_for(l, tokens)
  if wait > 0 then give_back(); return {'limiter', tostring(wait)} end
  if nanos >= 0 then
    local refused = budget(KEYS[4], 'reserve', nanos, ARGV[6], tonumber(ARGV[7]),
                           tonumber(ARGV[8]), 0)
    if #refused > 0 then give_back(); return {'budget', refused[1], refused[2], refused[3]} end
  end
  take(l, tokens)
  return {'ok', b[2]}
end
local answer = admit()
written()  -- the budgets' deltas, whatever the verdict
return answer
"""
)
"""A call's admission: breaker, limiter and budget in one script."""
