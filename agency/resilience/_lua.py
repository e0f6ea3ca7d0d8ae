"""The Redis scripts behind `agency.resilience.shared`: each one atomic, on Redis's clock.

One library of Lua functions (a breaker, a limiter, a budget, counters), each mirroring the
in-process class it shares (same rules, same states: their docstrings hold the contract), and
one entry script per use: the four single ones for the classes' own methods, `ADMIT` (breaker,
limiter and budget in one round trip before a call) and `SETTLE` (everything after it).

Every script reads the time from Redis (``TIME``), so processes on machines whose clocks
disagree still share one clock. Numbers go back as strings: Redis turns Lua numbers into
integers, which would cut every fraction of a second.
"""

from __future__ import annotations

__all__ = ["ADMIT", "BATCH", "BREAKER", "BUDGET", "LIMITER", "STATS"]

_LIBRARY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- A breaker policy travels as one argument, its numbers joined by '|' (one value to encode).
local function policy(packed)
  local n = {}
  for part in string.gmatch(packed, '[^|]+') do table.insert(n, tonumber(part)) end
  return {window = n[1], window_s = n[2], min_calls = n[3], rate = n[4], consecutive = n[5],
          base = n[6], max_cd = n[7], probes = n[8], max_ra = n[9], growth = n[10]}
end

-- A breaker: hash h, outcomes list w ("time|failed", oldest first). Returns {allowed, state,
-- retry_in, cooldown, probes, consecutive, trips, reason, failures, successes, opened_ago}.
local function breaker(h, w, op, p, seconds)
  local st = redis.call('HGET', h, 'st') or 'closed'
  if op == 'allow' and st == 'closed' then return {'1', 'closed'} end
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
    for _, item in ipairs(redis.call('LRANGE', w, 0, -1)) do
      local sep = string.find(item, '|', 1, true)
      if tonumber(string.sub(item, 1, sep - 1)) >= now - p.window_s then
        table.insert(kept, item)
        if string.sub(item, sep + 1) == '1' then failures = failures + 1 end
      end
    end
    return kept, failures
  end
  local function push(failed)
    local kept, failures = outcomes()
    while #kept >= p.window do
      if string.sub(table.remove(kept, 1), -1) == '1' then failures = failures - 1 end
    end
    table.insert(kept, tostring(now) .. '|' .. (failed and '1' or '0'))
    if failed then failures = failures + 1 end
    redis.call('DEL', w)
    redis.call('RPUSH', w, unpack(kept))
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
  elseif op == 'success' then
    if st == 'closed' then
      cons = 0; push(false)
    elseif st == 'half_open' then
      st = 'closed'; redis.call('DEL', w); cons = 0; lastf = -1e18; cd = p.base; pr = 0; untl = 0
    end
  elseif op == 'failure' then
    if st == 'closed' then
      if now - lastf > p.window_s then cons = 0 end
      cons = cons + 1; lastf = now
      local total, failures = push(true)
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
-- 'w:<family>' = kind|remaining|reported|limit|until. 'take'/'wait' return the wait in
-- seconds as a string (0: taken); the other ops return {requests, tokens, blocked_for, ...}.
local function limiter(h, op, rpm, tpm, tokens, extra)
  local v = redis.call('HMGET', h, 'rl', 'rs', 'tl', 'ts', 'blocked')
  local function bucket(level, stamp, cap)
    level, stamp = tonumber(level), tonumber(stamp)
    if level == nil then return cap end
    if now > stamp then level = math.min(cap, level + (now - stamp) * cap / 60) end
    return level
  end
  local rl = rpm > 0 and bucket(v[1], v[2], rpm) or 0
  local tl = tpm > 0 and bucket(v[3], v[4], tpm) or 0
  local blocked = tonumber(v[5]) or 0
  local windows = {}
  local all = redis.call('HGETALL', h)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'w:' then
      local parts = {}
      for part in string.gmatch(all[i + 1], '[^|]+') do table.insert(parts, part) end
      local win = {kind = parts[1], remaining = tonumber(parts[2]),
                   reported = tonumber(parts[3]), limit = tonumber(parts[4]),
                   untl = tonumber(parts[5])}
      if now < win.untl then windows[all[i]] = win else redis.call('HDEL', h, all[i]) end
    end
  end
  local function save()
    if rpm > 0 then redis.call('HSET', h, 'rl', tostring(rl), 'rs', tostring(now)) end
    if tpm > 0 then redis.call('HSET', h, 'tl', tostring(tl), 'ts', tostring(now)) end
    for key, win in pairs(windows) do
      redis.call('HSET', h, key, win.kind .. '|' .. win.remaining .. '|' .. win.reported
                 .. '|' .. win.limit .. '|' .. win.untl)
    end
    redis.call('EXPIRE', h, 86400)
  end
  local need = tokens > 1 and tokens or 1
  if op == 'take' or op == 'wait' then
    local wait = blocked - now
    if rpm > 0 and rl < 1 then wait = math.max(wait, (1 - rl) / (rpm / 60)) end
    if tpm > 0 then
      local deficit = math.min(need, tpm) - tl
      if deficit > 0 then wait = math.max(wait, deficit / (tpm / 60)) end
    end
    for _, win in pairs(windows) do
      local n = win.kind == 'requests' and 1 or need
      if win.limit >= 0 then n = math.min(n, win.limit) end
      if n > win.remaining then wait = math.max(wait, win.untl - now) end
    end
    if wait < 1e-9 then wait = 0 end
    if op == 'take' and wait == 0 then
      if rpm > 0 then rl = rl - 1 end
      if tpm > 0 then tl = tl - tokens end
      for _, win in pairs(windows) do
        win.remaining = win.remaining - (win.kind == 'requests' and 1 or tokens)
      end
      save()
    end
    return tostring(wait)
  elseif op == 'settle' then
    if tpm > 0 then tl = math.min(tpm, tl + tokens) end
    for _, win in pairs(windows) do
      if win.kind == 'tokens' then
        win.remaining = math.min(win.reported, win.remaining + tokens)
      end
    end
    save()
  elseif op == 'block' then
    blocked = math.max(blocked, now + tokens)
    redis.call('HSET', h, 'blocked', tostring(blocked))
  elseif op == 'observe' then
    local retry_after = tonumber(extra[1])
    local i = 2
    while extra[i] do
      local remaining = tonumber(extra[i + 2])
      windows['w:' .. extra[i]] = {kind = extra[i + 1], remaining = remaining,
                                   reported = remaining, limit = tonumber(extra[i + 3]),
                                   untl = now + tonumber(extra[i + 4])}
      i = i + 5
    end
    if retry_after >= 0 then
      blocked = math.max(blocked, now + retry_after)
      redis.call('HSET', h, 'blocked', tostring(blocked))
    end
    save()
  end
  local out = {tostring(rl), tostring(tl), tostring(math.max(0, blocked - now))}
  for key, win in pairs(windows) do
    table.insert(out, string.sub(key, 3) .. '|' .. win.kind .. '|' .. win.remaining .. '|'
                 .. win.limit .. '|' .. (win.untl - now))
  end
  return out
end

-- A budget: hash h with 'spent', 'reserved', 'spent:<role>', 'reserved:<role>', counters;
-- nanodollars. 'reserve' returns {} when held, else {scope, limit, left}.
local function budget(h, op, nanos, role, role_limit, total_limit, actual)
  local function get(field) return tonumber(redis.call('HGET', h, field) or '0') end
  if op == 'reserve' then
    if role ~= '' and role_limit >= 0 then
      local left = role_limit - get('spent:' .. role) - get('reserved:' .. role)
      if nanos > left then
        redis.call('HINCRBY', h, 'refused', 1)
        return {'role:' .. role, tostring(role_limit), tostring(left)}
      end
    end
    if total_limit >= 0 then
      local left = total_limit - get('spent') - get('reserved')
      if nanos > left then
        redis.call('HINCRBY', h, 'refused', 1)
        return {'total', tostring(total_limit), tostring(left)}
      end
    end
    redis.call('HINCRBY', h, 'reserved', nanos)
    if role ~= '' then redis.call('HINCRBY', h, 'reserved:' .. role, nanos) end
    redis.call('HINCRBY', h, 'open', 1)
    return {}
  elseif op == 'close' then
    redis.call('HINCRBY', h, 'reserved', -nanos)
    redis.call('HINCRBY', h, 'spent', actual)
    if role ~= '' then
      redis.call('HINCRBY', h, 'reserved:' .. role, -nanos)
      redis.call('HINCRBY', h, 'spent:' .. role, actual)
    end
    redis.call('HINCRBY', h, 'open', -1)
    return {}
  elseif op == 'seed' then
    -- What was spent before this hash existed (e.g. a key's spend kept on disk), once.
    redis.call('HSETNX', h, 'spent', actual)
    return {}
  end
  return redis.call('HGETALL', h)
end

local function stats(h, argv, from)
  for i = from, #argv, 2 do redis.call('HINCRBY', h, argv[i], argv[i + 1]) end
end

-- Queued writes, in order: from ARGV[ai] on, per write its kind (BREAKER, LIMITER, BUDGET,
-- STATS), its number of keys and of arguments, then the arguments; from KEYS[ki] on, every
-- write's keys. Each write runs as its own script would.
local function writes(keys, argv, ki, ai)
  while ai <= #argv do
    local kind, nk, na = argv[ai], tonumber(argv[ai + 1]), tonumber(argv[ai + 2])
    ai = ai + 3
    local k, a = {}, {}
    for j = 1, nk do k[j] = keys[ki]; ki = ki + 1 end
    for j = 1, na do a[j] = argv[ai]; ai = ai + 1 end
    if kind == 'BREAKER' then
      breaker(k[1], k[2], a[1], policy(a[3]), tonumber(a[2]))
    elseif kind == 'LIMITER' then
      local extra = {}
      for j = 5, #a do table.insert(extra, a[j]) end
      limiter(k[1], a[1], tonumber(a[2]), tonumber(a[3]), tonumber(a[4]), extra)
    elseif kind == 'BUDGET' then
      budget(k[1], a[1], tonumber(a[2]), a[3], tonumber(a[4]), tonumber(a[5]),
             tonumber(a[6] or '0'))
    elseif kind == 'STATS' then
      stats(k[1], a, 1)
    end
  end
end
"""

BREAKER = (
    _LIBRARY
    + """
-- KEYS: hash, outcomes. ARGV: op, seconds, policy.
return breaker(KEYS[1], KEYS[2], ARGV[1], policy(ARGV[3]), tonumber(ARGV[2]))
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
return budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
              tonumber(ARGV[5]), tonumber(ARGV[6] or '0'))
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
writes(KEYS, ARGV, 1, 1)
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
-- KEYS: breaker hash, breaker outcomes, limiter hash, budget hash (then the keys of the
--       queued writes run first, as BATCH runs them).
-- ARGV: breaker policy, rpm, tpm, tokens, nanos (-1: no budget), role, role limit,
--       total limit (then the queued writes).
-- Returns {'ok'} | {'breaker', retry_in, state, probes, cooldown}
--       | {'limiter', wait} | {'budget', scope, limit, left}.
writes(KEYS, ARGV, 5, 9)  -- this process's queued writes first: it reads its own writes
local p = policy(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nanos = tonumber(ARGV[5])
local b = breaker(KEYS[1], KEYS[2], 'allow', p, 0)
if b[1] ~= '1' then
  local full = breaker(KEYS[1], KEYS[2], 'read', p, 0)
  return {'breaker', full[3], full[2], full[5], full[4]}
end
local function give_back()
  if b[2] ~= 'closed' then breaker(KEYS[1], KEYS[2], 'release', p, 0) end
end
local wait = limiter(KEYS[3], 'wait', rpm, tpm, tokens, {})
if tonumber(wait) > 0 then give_back(); return {'limiter', wait} end
if nanos >= 0 then
  local refused = budget(KEYS[4], 'reserve', nanos, ARGV[6], tonumber(ARGV[7]),
                         tonumber(ARGV[8]), 0)
  if #refused > 0 then give_back(); return {'budget', refused[1], refused[2], refused[3]} end
end
limiter(KEYS[3], 'take', rpm, tpm, tokens, {})
return {'ok'}
"""
)
"""A call's admission: breaker, limiter and budget in one script."""
