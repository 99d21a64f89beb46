#!lua name=sluice_v1
-- sluice: every sluice-core algorithm over Redis, as a Redis function library (loaded
-- once with FUNCTION LOAD, so a call pays for no Lua definitions; called with FCALL), one
-- call for every operation, so that a request checked against several limits costs one
-- round trip and is all or nothing. The arithmetic mirrors crates/sluice-core/src/algorithm/*.rs exactly.
--
-- Lua numbers are doubles: exact integers only below 2^53. Instants (nanoseconds since the
-- Unix epoch, ~1.8e18) do not fit, so the script works with offsets from `now`, which do:
-- every span a policy may have (period, burst x emission interval) is below 2^52 ns (the
-- Rust side checks). Stored instants are decimal strings of nanoseconds.
--
-- ARGV: op, now ('' = Redis TIME), cost, max_wait, min_ttl_ms (a floor under every key's
-- TTL: keys expire in Redis' real time, so a caller passing its own timeline asks for
-- TTLs that real time cannot outrun), then per limit 6 values:
--   key index (1-based into KEYS), algorithm (g f s l c), limit, period, burst, emission
-- For 'refund' and 'settle' each limit is followed by 3 more: ticket cost, ticket at, lease;
-- 'settle' reads the actual cost from the cost argument.
-- Reply: per limit 9 values: allowed, limit, remaining, reset_after, retry_after (-1 for
-- none), exceeds capacity, ready_at, ticket at, lease; then the script's `now`.

local E9 = 1000000000
-- Library globals such as `math` are only reachable at call time, not while loading.
local function floor(x) return math.floor(x) end

-- Set at the start of every call (one call runs at a time).
local op, now_s, now_n, cost, max_wait, min_ttl_ms, keys, states, reply

-- Exact integer helpers (all inputs below 2^53).

local function idiv(a, b)
  local q = floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

-- floor(a * b / c) and the remainder, by binary long multiplication; `cap` bounds the
-- quotient (the caller only needs min(quotient, cap)).
local function muldiv(a, b, c, cap)
  local q, r = 0, 0
  local p = 1
  while p * 2 <= a do p = p * 2 end
  while p >= 1 do
    q, r = q * 2, r * 2
    if r >= c then r = r - c; q = q + 1 end
    if a >= p then
      a = a - p
      r = r + b
      local k = idiv(r, c)
      q, r = q + k, r - k * c
    end
    if cap and q >= cap then return cap, 0 end
    p = p / 2
  end
  return q, r
end

-- Instants as offsets from now.
local function offset(text)
  if text == nil or text == '' then return nil end
  local s, n
  if #text > 9 then
    s, n = tonumber(string.sub(text, 1, -10)), tonumber(string.sub(text, -9))
  else
    s, n = 0, tonumber(text)
  end
  return (s - now_s) * E9 + (n - now_n)
end

local now_text -- absolute(0), computed once per call

local function absolute(off)
  if off == 0 and now_text then return now_text end
  local t = now_n + off
  local c = floor(t / E9)
  local r = t - c * E9
  if r < 0 then c = c - 1; r = r + E9 elseif r >= E9 then c = c + 1; r = r - E9 end
  local s = now_s + c
  if s <= 0 then return string.format('%d', r) end
  return string.format('%d%09d', s, r)
end

-- now mod p, exactly. Whole seconds and divisors of a second (the usual periods) take a
-- shortcut; any other period takes the long multiplication.
local function now_mod(p)
  if p % E9 == 0 then return (now_s % (p / E9)) * E9 + now_n end
  if E9 % p == 0 then return now_n % p end
  local _, r = muldiv(now_s, E9, p)
  return (r + now_n) % p
end

local function decision(allowed, limit, remaining, reset, retry, exceeds)
  return { allowed = allowed, limit = limit, remaining = remaining, reset = reset,
           retry = retry, exceeds = exceeds }
end

-- GCRA: state { tat } (offset).

local gcra = {}
-- A fresh bucket is full: any arrival time at or before now (-1) says so.
function gcra.load(v) if not v then return { tat = -1 } end return { tat = offset(v) } end
function gcra.save(st) return absolute(st.tat) end
function gcra.expires(p, st) return st.tat end
local function tokens(capacity, debt, t)
  if debt >= capacity then return 0 end
  return idiv(capacity - debt, t)
end
function gcra.decide(p, st, c)
  local t = p.emission
  local capacity = p.burst * t
  local debt = st.tat > 0 and st.tat or 0
  if c > p.burst then
    return decision(false, p.burst, tokens(capacity, debt, t), debt, -1, true)
  end
  local after = debt + c * t
  if after <= capacity then
    return decision(true, p.burst, tokens(capacity, after, t), after, -1, false)
  end
  return decision(false, p.burst, tokens(capacity, debt, t), debt, after - capacity, false)
end
function gcra.plan(p, st, c, wait_max)
  local d = gcra.decide(p, st, c)
  if d.allowed or d.exceeds then return d, 0 end
  if d.retry > wait_max then
    d.retry = d.retry - wait_max
    return d, 0
  end
  local debt = st.tat > 0 and st.tat or 0
  return decision(true, p.burst, 0, debt + c * p.emission, -1, false), d.retry
end
function gcra.apply(p, st, c)
  local base = st.tat > 0 and st.tat or 0
  st.tat = base + c * p.emission
  return ''
end
function gcra.refund(p, st, ticket, amount)
  if st.tat <= 0 then return end
  local back = st.tat - amount * p.emission
  st.tat = back > 0 and back or 0
end
function gcra.charge(p, st, ticket, amount)
  local base = st.tat > 0 and st.tat or 0
  st.tat = base + amount * p.emission
end

-- Windows: state { start (offset), current, previous }.

local function load_window(v)
  if v == nil or v == false then return { start = nil, current = 0, previous = 0 } end
  local start, current, previous = string.match(v, '^(%d+) (%d+) (%d+)$')
  return { start = offset(start), current = tonumber(current), previous = tonumber(previous) }
end
local function save_window(st)
  return absolute(st.start) .. ' ' .. string.format('%d', st.current) .. ' '
    .. string.format('%d', st.previous)
end
-- (start, previous, current) as of now.
local function rolled(p, st)
  local start = -now_mod(p.period)
  if st.start ~= nil and st.start >= start then return st.start, st.previous, st.current end
  if st.start ~= nil and st.start + p.period == start then return start, st.current, 0 end
  return start, 0, 0
end
local function roll(p, st)
  st.start, st.previous, st.current = rolled(p, st)
end
local function debit(p, st, c)
  roll(p, st)
  st.current = st.current + c
end
local function refund_window(p, st, ticket, amount)
  local at = ticket.at
  local ticket_start = at - ((now_mod(p.period) + at) % p.period)
  if ticket_start == st.start then
    st.current = st.current > amount and st.current - amount or 0
  elseif ticket_start + p.period == st.start then
    st.previous = st.previous > amount and st.previous - amount or 0
  end
end

local fixed = { load = load_window, save = save_window }
function fixed.expires(p, st) return st.start and st.start + p.period end
function fixed.decide(p, st, c)
  local start, _, current = rolled(p, st)
  local window_end = start + p.period
  local function reset(counted) if counted == 0 then return 0 end return window_end end
  local remaining = p.limit > current and p.limit - current or 0
  if c > p.limit then return decision(false, p.limit, remaining, reset(current), -1, true) end
  if c <= remaining then return decision(true, p.limit, remaining - c, reset(current + c), -1, false) end
  local r = reset(current)
  return decision(false, p.limit, remaining, r, r, false)
end
function fixed.apply(p, st, c) debit(p, st, c); return '' end
function fixed.refund(p, st, ticket, amount) roll(p, st); refund_window(p, st, ticket, amount) end
function fixed.charge(p, st, ticket, amount) debit(p, st, amount) end

local sliding = { load = load_window, save = save_window }
function sliding.expires(p, st) return st.start and st.start + 2 * p.period end
-- ceil(previous * (period - elapsed) / period): the previous window's weight in whole units.
local function weight(p, start, previous)
  local elapsed = -start
  if elapsed > p.period then elapsed = p.period end
  if elapsed < 0 then elapsed = 0 end
  local q, r = muldiv(previous, p.period - elapsed, p.period)
  if r > 0 then q = q + 1 end
  return q
end
local function elapsed_when_fits(period, previous, room)
  if previous == 0 then return 0 end
  local slack = muldiv(room, period, previous, period)
  return period - slack
end
function sliding.decide(p, st, c)
  local start, previous, current = rolled(p, st)
  local period, limit = p.period, p.limit
  local w = weight(p, start, previous)
  local function remaining(used)
    local left = limit - used - w
    return left > 0 and left or 0
  end
  local reset
  if current > 0 then reset = start + 2 * period
  elseif previous > 0 then reset = start + period
  else reset = 0 end
  if reset < 0 then reset = 0 end
  if c > limit then return decision(false, limit, remaining(current), reset, -1, true) end
  local wanted = current + c
  if wanted <= limit and w <= limit - wanted then
    if wanted ~= 0 then reset = start + 2 * period end
    return decision(true, limit, remaining(wanted), reset, -1, false)
  end
  local retry_at
  if wanted <= limit then
    retry_at = start + elapsed_when_fits(period, previous, limit - wanted)
  else
    retry_at = start + period + elapsed_when_fits(period, current, limit - c)
  end
  local retry = retry_at > 1 and retry_at or 1
  return decision(false, limit, remaining(current), reset, retry, false)
end
function sliding.apply(p, st, c) debit(p, st, c); return '' end
function sliding.refund(p, st, ticket, amount) roll(p, st); refund_window(p, st, ticket, amount) end
function sliding.charge(p, st, ticket, amount) debit(p, st, amount) end

-- Sliding log: state { entries = { {at, cost}... } sorted, total }.

local log = {}
function log.load(v)
  local st = { entries = {}, total = 0 }
  if v == nil or v == false then return st end
  for at, c in string.gmatch(v, '(%d+):(%d+)') do
    local n = tonumber(c)
    table.insert(st.entries, { offset(at), n })
    st.total = st.total + n
  end
  return st
end
function log.save(st)
  local parts = {}
  for i, e in ipairs(st.entries) do parts[i] = absolute(e[1]) .. ':' .. string.format('%d', e[2]) end
  return table.concat(parts, ',')
end
function log.expires(p, st)
  local last = st.entries[#st.entries]
  if last == nil then return nil end
  return last[1] + p.period
end
local function live(p, at) return -at < p.period end
local function prune(p, st)
  while st.entries[1] ~= nil and not live(p, st.entries[1][1]) do
    st.total = st.total - st.entries[1][2]
    table.remove(st.entries, 1)
  end
end
local function used(p, st)
  local expired = 0
  for _, e in ipairs(st.entries) do
    if live(p, e[1]) then break end
    expired = expired + e[2]
  end
  return st.total - expired
end
local function find(st, at)
  for i, e in ipairs(st.entries) do
    if e[1] == at then return i end
    if e[1] > at then return nil, i end
  end
  return nil, #st.entries + 1
end
local function add_at(st, at, c)
  if c == 0 then return end
  st.total = st.total + c
  local i, insert_at = find(st, at)
  if i then st.entries[i][2] = st.entries[i][2] + c
  else table.insert(st.entries, insert_at, { at, c }) end
end
function log.decide(p, st, c)
  local limit, period = p.limit, p.period
  local u = used(p, st)
  local remaining = limit > u and limit - u or 0
  local newest = st.entries[#st.entries]
  local reset = 0
  if newest ~= nil and live(p, newest[1]) then reset = newest[1] + period end
  if c > limit then return decision(false, limit, remaining, reset, -1, true) end
  if c <= remaining then
    if c ~= 0 then reset = period end
    return decision(true, limit, remaining - c, reset, -1, false)
  end
  local still, retry_at = u, 0
  for _, e in ipairs(st.entries) do
    if live(p, e[1]) then
      still = still > e[2] and still - e[2] or 0
      retry_at = e[1] + period
      if still + c <= limit then break end
    end
  end
  return decision(false, limit, remaining, reset, retry_at > 0 and retry_at or 0, false)
end
function log.apply(p, st, c)
  prune(p, st)
  add_at(st, 0, c)
  return ''
end
function log.refund(p, st, ticket, amount)
  prune(p, st)
  local i = find(st, ticket.at)
  if i then
    local e = st.entries[i]
    local back = amount < e[2] and amount or e[2]
    e[2] = e[2] - back
    st.total = st.total - back
    if e[2] == 0 then table.remove(st.entries, i) end
  end
end
function log.charge(p, st, ticket, amount)
  prune(p, st)
  if live(p, ticket.at) then add_at(st, ticket.at, amount) end
end

-- Concurrency: state { next_id (offset), leases = { {id (offset), cost, expires (offset)} } }.

local lease = {}
function lease.load(v)
  local st = { next_id = nil, leases = {} }
  if v == nil or v == false then return st end
  local next_id, rest = string.match(v, '^(%d*);(.*)$')
  st.next_id = offset(next_id)
  for id, c, exp in string.gmatch(rest, '(%d+):(%d+):(%d+)') do
    table.insert(st.leases, { offset(id), tonumber(c), offset(exp) })
  end
  return st
end
function lease.save(st)
  local parts = {}
  for i, l in ipairs(st.leases) do
    parts[i] = absolute(l[1]) .. ':' .. string.format('%d', l[2]) .. ':' .. absolute(l[3])
  end
  return (st.next_id and absolute(st.next_id) or '') .. ';' .. table.concat(parts, ',')
end
function lease.expires(p, st)
  local last = st.next_id
  for _, l in ipairs(st.leases) do
    if last == nil or l[3] > last then last = l[3] end
  end
  return last
end
local function in_flight(st)
  local sum = 0
  for _, l in ipairs(st.leases) do if l[3] > 0 then sum = sum + l[2] end end
  return sum
end
local function drop_expired(st)
  local kept = {}
  for _, l in ipairs(st.leases) do if l[3] > 0 then table.insert(kept, l) end end
  st.leases = kept
end
function lease.decide(p, st, c)
  local limit = p.limit
  local u = in_flight(st)
  local remaining = limit > u and limit - u or 0
  local last
  for _, l in ipairs(st.leases) do if last == nil or l[3] > last then last = l[3] end end
  local reset = (last ~= nil and last > 0) and last or 0
  if c > limit then return decision(false, limit, remaining, reset, -1, true) end
  if c <= remaining then
    if c ~= 0 and reset < p.period then reset = p.period end
    return decision(true, limit, remaining - c, reset, -1, false)
  end
  local live_leases = {}
  for _, l in ipairs(st.leases) do if l[3] > 0 then table.insert(live_leases, l) end end
  table.sort(live_leases, function(a, b) return a[3] < b[3] end)
  local still, retry_at = u, 0
  for _, l in ipairs(live_leases) do
    still = still > l[2] and still - l[2] or 0
    retry_at = l[3]
    if still + c <= limit then break end
  end
  return decision(false, limit, remaining, reset, retry_at, false)
end
function lease.apply(p, st, c)
  drop_expired(st)
  if c == 0 then return '0' end
  local id = 0
  if st.next_id ~= nil and st.next_id > 0 then id = st.next_id end
  st.next_id = id + 1
  table.insert(st.leases, { id, c, p.period })
  return absolute(id)
end
local function find_lease(st, id)
  for i, l in ipairs(st.leases) do if l[1] == id then return i end end
end
function lease.refund(p, st, ticket, amount)
  drop_expired(st)
  local i = find_lease(st, ticket.lease)
  if i then
    local l = st.leases[i]
    if amount >= ticket.cost then l[2] = 0 else l[2] = l[2] > amount and l[2] - amount or 0 end
    if l[2] == 0 then table.remove(st.leases, i) end
  end
end
function lease.charge(p, st, ticket, amount)
  drop_expired(st)
  local i = find_lease(st, ticket.lease)
  if i then st.leases[i][2] = st.leases[i][2] + amount end
end

local algorithms = { g = gcra, f = fixed, s = sliding, l = log, c = lease }

-- Writes a limit's state back with a TTL that outlives its expiry, or deletes it when it
-- decides like a fresh one.
local function store(p)
  local st = states[p.key]
  local expires = p.algo.expires(p, st)
  if expires == nil or expires <= 0 then
    redis.call('DEL', keys[p.key])
  else
    local ttl = floor((expires + 999999) / 1000000)
    if ttl < min_ttl_ms then ttl = min_ttl_ms end
    redis.call('SET', keys[p.key], p.algo.save(st), 'PX', ttl)
  end
end

local function push(d, ready, at, id)
  local n = #reply
  reply[n + 1] = d.allowed and 1 or 0
  reply[n + 2] = d.limit
  reply[n + 3] = d.remaining
  reply[n + 4] = d.reset
  reply[n + 5] = d.retry
  reply[n + 6] = d.exceeds and 1 or 0
  reply[n + 7] = absolute(ready)
  reply[n + 8] = at
  reply[n + 9] = id
end

-- One call: decide, reserve, peek, refund or settle over the limits of one request.
local function call(KEYS, ARGV)
  op = ARGV[1]
  if ARGV[2] == '' then
    local t = redis.call('TIME')
    now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
  else
    local text = ARGV[2]
    if #text > 9 then
      now_s, now_n = tonumber(string.sub(text, 1, -10)), tonumber(string.sub(text, -9))
    else
      now_s, now_n = 0, tonumber(text)
    end
  end
  now_text = nil
  now_text = absolute(0)
  cost = tonumber(ARGV[3])
  max_wait = tonumber(ARGV[4])
  min_ttl_ms = tonumber(ARGV[5])

  -- Fast path for the commonest call, one GCRA check: the same arithmetic as
  -- gcra.decide and gcra.apply below, without building tables (a third less Redis CPU).
  -- The conformance suite's single GCRA checks run through here.
  if op == 'check' and #ARGV == 11 and ARGV[7] == 'g' then
    local burst, t = tonumber(ARGV[10]), tonumber(ARGV[11])
    local v = redis.call('GET', KEYS[1])
    local debt = v and offset(v) or 0
    if debt < 0 then debt = 0 end
    local capacity = burst * t
    if cost > burst then
      return { 0, burst, tokens(capacity, debt, t), debt, -1, 1, now_text, '', '', now_text }
    end
    local after = debt + cost * t
    if after > capacity then
      return { 0, burst, tokens(capacity, debt, t), debt, after - capacity, 0, now_text, '', '',
               now_text }
    end
    if after > 0 then
      local ttl = floor((after + 999999) / 1000000)
      if ttl < min_ttl_ms then ttl = min_ttl_ms end
      redis.call('SET', KEYS[1], absolute(after), 'PX', ttl)
    end
    return { 1, burst, tokens(capacity, after, t), after, -1, 0, now_text, now_text, '', now_text }
  end

  -- Load every state once; limits on the same key share it.
  local per_limit = (op == 'refund' or op == 'settle') and 9 or 6
  local count = (#ARGV - 5) / per_limit
  keys, states, reply = KEYS, {}, {}
  local dirty = {}
  local limits = {}
  for i = 1, count do
    local b = 5 + (i - 1) * per_limit
    local p = {
      key = tonumber(ARGV[b + 1]), algo = algorithms[ARGV[b + 2]],
      limit = tonumber(ARGV[b + 3]), period = tonumber(ARGV[b + 4]),
      burst = tonumber(ARGV[b + 5]), emission = tonumber(ARGV[b + 6]),
    }
    if per_limit == 9 then
      p.ticket = { cost = tonumber(ARGV[b + 7]), at = offset(ARGV[b + 8]), lease = offset(ARGV[b + 9]) }
    end
    if states[p.key] == nil then
      states[p.key] = p.algo.load(redis.call('GET', KEYS[p.key]))
    end
    limits[i] = p
  end

  if op == 'check' or op == 'reserve' or op == 'peek' then
    local snapshot = {}
    local all = true
    for _, p in ipairs(limits) do
      local st = states[p.key]
      local d, wait
      if op == 'reserve' and p.algo.plan then
        d, wait = p.algo.plan(p, st, cost, max_wait)
      else
        d, wait = p.algo.decide(p, st, op == 'peek' and 0 or cost), 0
      end
      local at, id = '', '0'
      if d.allowed and op ~= 'peek' then
        id = p.algo.apply(p, st, cost)
        at = absolute(wait)
        dirty[p.key] = p
      end
      if not d.allowed then all = false end
      push(d, wait, at, id)
    end
    if all and op ~= 'peek' then
      for _, p in pairs(dirty) do store(p) end
    end
    reply[#reply + 1] = absolute(0)
    return reply
  end

  if op == 'refund' or op == 'settle' then
    for _, p in ipairs(limits) do
      local st = states[p.key]
      local t = p.ticket
      local existed = redis.call('EXISTS', KEYS[p.key]) == 1 or dirty[p.key]
      if op == 'refund' then
        if existed then p.algo.refund(p, st, t, t.cost) end
      elseif cost < t.cost then
        if existed then p.algo.refund(p, st, t, t.cost - cost) end
      elseif cost > t.cost then
        p.algo.charge(p, st, t, cost - t.cost)
      end
      dirty[p.key] = p
    end
    for _, p in pairs(dirty) do store(p) end
    reply[#reply + 1] = absolute(0)
    return reply
  end

  return redis.error_reply('sluice: unknown operation ' .. tostring(op))
end


-- ---- Lines: waiting in line for the limits of a line (sluice-store's QueueStore) --------
--
-- The rules are sluice-core's queue.rs exactly (highest priority first, tenants in turns
-- within a priority, arrival within a tenant; a full line's overflow strategy; deadlines;
-- pause), and the conformance suite compares the two. A line is eleven keys, so that every
-- operation is O(log n) in the waiters:
--   m  HASH   n (next id), s (next round place), p (paused), g ov pr to ev (counts)
--   w  HASH   id -> priority|tenant|deadline|joined|cost
--   r  ZSET   the rounds, by lex: priority key : place : tenant (first = served next)
--   t  HASH   priority key : tenant -> its place in the round
--   f  ZSET   each tenant's waiters, by lex: priority key : tenant : id
--   d  ZSET   deadlines, by lex: deadline (20 digits) : id
--   i  ZSET   ids by arrival (score = id)
--   p  ZSET   each priority's ids, by lex: priority key : id
--   c  HASH   priority -> waiters
--   o  HASH   id -> unread outcome (g|9 values per limit, t, e, l)
--   l  LIST   outcome ids, oldest first (to forget the oldest beyond the bound)
-- A priority key is 2^31 - 1 - priority in 8 hex digits (higher priority sorts first), a
-- tenant is hex-encoded ('' for none), ids and places are 16 hex digits.
--
-- KEYS: the line's limits' keys (as for 'check'), then the eleven line keys in that order.
-- ARGV: op (join serve status poll leave pause resume stats), now ('' = Redis TIME),
-- min_ttl_ms,
-- max_length, overflow (r d e), max_outcomes, priority, tenant ('' none, else '=' name),
-- max_wait, cost, ticket, then the line's limits, 6 values each as for 'check'.
-- Replies: join: {'g', 9 values per limit} | {'w', ticket} | {'r', 'overflow'|'paused'};
-- serve: {now, next_at or '', granted tickets...}; poll: {now, next_at or '', how many
-- granted, granted tickets..., then the status}; status and leave: {'w'} | {'g', 9 values
-- per limit} | {'t'} (timed out) | {'e'} (evicted) | {'l'} (too large) | {'u'} (unknown);
-- stats: {paused, granted, overflow, paused refusals, timed out, evicted, how long the
-- first to join has waited (ns) or '', then priority, count pairs, highest first}.

local line_limits, LK

local function set_now(text)
  if text == '' then
    local t = redis.call('TIME')
    now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
  elseif #text > 9 then
    now_s, now_n = tonumber(string.sub(text, 1, -10)), tonumber(string.sub(text, -9))
  else
    now_s, now_n = 0, tonumber(text)
  end
  now_text = nil
  now_text = absolute(0)
end

-- Checks `c` units against every limit of the line; debits all of them only if all allow.
-- Returns whether all allowed, whether one can never admit `c`, the longest retry of the
-- refusing ones (nil when one of them cannot say), and the 9 reply values per limit.
local function check_line(c)
  states, reply = {}, {}
  local dirty, all, exceeds, retry = {}, true, false, 0
  for _, p in ipairs(line_limits) do
    if states[p.key] == nil then states[p.key] = p.algo.load(redis.call('GET', keys[p.key])) end
  end
  for _, p in ipairs(line_limits) do
    local d = p.algo.decide(p, states[p.key], c)
    local at, id = '', '0'
    if d.allowed then
      id = p.algo.apply(p, states[p.key], c)
      at = now_text
      dirty[p.key] = p
    else
      all = false
      if d.exceeds then exceeds = true end
      if retry and d.retry >= 0 then
        if d.retry > retry then retry = d.retry end
      else
        retry = nil
      end
    end
    push(d, 0, at, id)
  end
  if all then for _, p in pairs(dirty) do store(p) end end
  return all, exceeds, retry, reply
end

local function hex16(n) return string.format('%016x', n) end
local function pkey(priority) return string.format('%08x', 2147483647 - priority) end
local function enc(tenant)
  return (string.gsub(tenant, '.', function(ch) return string.format('%02x', string.byte(ch)) end))
end
local function pad20(text) return string.rep('0', 20 - #text) .. text end
local function strip(text)
  local t = string.gsub(text, '^0+', '')
  if t == '' then return '0' end
  return t
end
local function split(text)
  local out = {}
  for part in string.gmatch(text .. '|', '([^|]*)|') do table.insert(out, part) end
  return out
end

-- The waiter `idh` (16 hex digits), or nil.
local function waiter(idh)
  local v = redis.call('HGET', LK.w, idh)
  if not v then return nil end
  local f = split(v)
  return { idh = idh, id = tonumber(idh, 16), priority = tonumber(f[1]), pk = pkey(tonumber(f[1])),
           te = f[2], deadline = f[3], joined = f[4], cost = tonumber(f[5]) }
end

local function tenant_has_more(pk, te)
  return #redis.call('ZRANGEBYLEX', LK.f, '[' .. pk .. ':' .. te .. ':', '(' .. pk .. ':' .. te .. ';', 'LIMIT', 0, 1) > 0
end

-- Takes a waiter out; its tenant leaves the round if it has no one else waiting.
local function take(idh)
  local w = waiter(idh)
  if not w then return nil end
  redis.call('HDEL', LK.w, idh)
  redis.call('ZREM', LK.f, w.pk .. ':' .. w.te .. ':' .. idh)
  redis.call('ZREM', LK.d, w.deadline .. ':' .. idh)
  redis.call('ZREM', LK.i, idh)
  redis.call('ZREM', LK.p, w.pk .. ':' .. idh)
  if redis.call('HINCRBY', LK.c, w.priority, -1) <= 0 then redis.call('HDEL', LK.c, w.priority) end
  if not tenant_has_more(w.pk, w.te) then
    local place = redis.call('HGET', LK.t, w.pk .. ':' .. w.te)
    if place then
      redis.call('ZREM', LK.r, w.pk .. ':' .. place .. ':' .. w.te)
      redis.call('HDEL', LK.t, w.pk .. ':' .. w.te)
    end
  end
  return w
end

local function next_place()
  return hex16(redis.call('HINCRBY', LK.m, 's', 1) - 1)
end

local function join_round(pk, te)
  local place = next_place()
  redis.call('ZADD', LK.r, 0, pk .. ':' .. place .. ':' .. te)
  redis.call('HSET', LK.t, pk .. ':' .. te, place)
end

local function finish(idh, text, max_o)
  redis.call('HSET', LK.o, idh, text)
  redis.call('RPUSH', LK.l, idh)
  while redis.call('LLEN', LK.l) > max_o do
    redis.call('HDEL', LK.o, redis.call('LPOP', LK.l))
  end
end

local function head()
  local first = redis.call('ZRANGE', LK.r, 0, 0)[1]
  if not first then return nil end
  local pk, te = string.sub(first, 1, 8), string.sub(first, 27)
  local member = redis.call('ZRANGEBYLEX', LK.f, '[' .. pk .. ':' .. te .. ':', '(' .. pk .. ':' .. te .. ';', 'LIMIT', 0, 1)[1]
  if not member then return nil end
  return waiter(string.sub(member, -16)), first
end

-- Serves the head: it leaves, and its tenant goes to the end of the round if it has more.
local function pop_head()
  local w, member = head()
  take(w.idh)
  if tenant_has_more(w.pk, w.te) then
    redis.call('ZREM', LK.r, member)
    join_round(w.pk, w.te)
  end
  return w
end

local function next_deadline()
  local first = redis.call('ZRANGE', LK.d, 0, 0)[1]
  if not first then return nil end
  return offset(strip(string.sub(first, 1, 20)))
end

local function meta_add(field, n) redis.call('HINCRBY', LK.m, field, n) end

local function expire(max_o)
  local due = redis.call('ZRANGEBYLEX', LK.d, '-', '[' .. pad20(now_text) .. ':~')
  for _, member in ipairs(due) do
    local idh = string.sub(member, -16)
    take(idh)
    meta_add('to', 1)
    finish(idh, 't', max_o)
  end
end

local function serve_line(max_o)
  local granted = {}
  expire(max_o)
  while true do
    if redis.call('HGET', LK.m, 'p') == '1' then return granted, next_deadline() end
    local w = head()
    if w == nil then return granted, nil end
    local all, exceeds, retry, values = check_line(w.cost)
    if all then
      pop_head()
      meta_add('g', 1)
      table.insert(granted, w.id)
      local text = { 'g' }
      for _, v in ipairs(values) do
        table.insert(text, type(v) == 'number' and string.format('%d', v) or v)
      end
      finish(w.idh, table.concat(text, '|'), max_o)
    elseif exceeds then
      take(w.idh)
      finish(w.idh, 'l', max_o)
    else
      local nd = next_deadline()
      if retry == nil then return granted, nd end
      if nd ~= nil and nd < retry then return granted, nd end
      return granted, retry
    end
  end
end

local function read_status(idh)
  local o = redis.call('HGET', LK.o, idh)
  if o then
    redis.call('HDEL', LK.o, idh)
    return split(o)
  end
  if redis.call('HEXISTS', LK.w, idh) == 1 then return { 'w' } end
  return { 'u' }
end

local LINE_KEYS = { 'm', 'w', 'r', 't', 'f', 'd', 'i', 'p', 'c', 'o', 'l' }

local function queue_call(KEYS, ARGV)
  local qop = ARGV[1]
  set_now(ARGV[2])
  min_ttl_ms = tonumber(ARGV[3])
  local max_len, ovf, max_o = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
  local count = (#ARGV - 11) / 6
  keys = KEYS
  line_limits = {}
  for i = 1, count do
    local b = 11 + (i - 1) * 6
    line_limits[i] = {
      key = tonumber(ARGV[b + 1]), algo = algorithms[ARGV[b + 2]],
      limit = tonumber(ARGV[b + 3]), period = tonumber(ARGV[b + 4]),
      burst = tonumber(ARGV[b + 5]), emission = tonumber(ARGV[b + 6]),
    }
  end
  LK = {}
  local first = #KEYS - #LINE_KEYS
  for i, name in ipairs(LINE_KEYS) do LK[name] = KEYS[first + i] end
  local out
  local writes = true

  if qop == 'join' then
    local priority, te, c = tonumber(ARGV[7]), enc(ARGV[8]), tonumber(ARGV[10])
    serve_line(max_o)
    local waiting = redis.call('HLEN', LK.w)
    local paused = redis.call('HGET', LK.m, 'p') == '1'
    if waiting == 0 and not paused then
      local all, _, _, values = check_line(c)
      if all then
        meta_add('g', 1)
        out = { 'g' }
        for _, v in ipairs(values) do table.insert(out, v) end
      end
    end
    if out == nil and waiting >= max_len then
      local victim
      if paused then
        meta_add('pr', 1)
        out = { 'r', 'paused' }
      elseif ovf == 'd' then
        victim = redis.call('ZRANGE', LK.i, 0, 0)[1]
      elseif ovf == 'e' then
        local lowest
        for _, p in ipairs(redis.call('HKEYS', LK.c)) do
          local n = tonumber(p)
          if lowest == nil or n < lowest then lowest = n end
        end
        if lowest ~= nil and lowest < priority then
          local pk = pkey(lowest)
          local m = redis.call('ZREVRANGEBYLEX', LK.p, '(' .. pk .. ';', '[' .. pk .. ':', 'LIMIT', 0, 1)[1]
          if m then victim = string.sub(m, -16) end
        end
      end
      if out == nil then
        if victim == nil then
          meta_add('ov', 1)
          out = { 'r', 'overflow' }
        else
          take(victim)
          meta_add('ev', 1)
          finish(victim, 'e', max_o)
        end
      end
    end
    if out == nil then
      local id = redis.call('HINCRBY', LK.m, 'n', 1) - 1
      local idh, pk = hex16(id), pkey(priority)
      local deadline = pad20(absolute(tonumber(ARGV[9])))
      redis.call('HSET', LK.w, idh, priority .. '|' .. te .. '|' .. deadline .. '|' .. now_text .. '|' .. c)
      redis.call('ZADD', LK.f, 0, pk .. ':' .. te .. ':' .. idh)
      redis.call('ZADD', LK.d, 0, deadline .. ':' .. idh)
      redis.call('ZADD', LK.i, id, idh)
      redis.call('ZADD', LK.p, 0, pk .. ':' .. idh)
      redis.call('HINCRBY', LK.c, priority, 1)
      if redis.call('HEXISTS', LK.t, pk .. ':' .. te) == 0 then join_round(pk, te) end
      out = { 'w', tostring(id) }
    end
  elseif qop == 'serve' then
    local granted, next_at = serve_line(max_o)
    out = { now_text, next_at and absolute(next_at) or '' }
    for _, id in ipairs(granted) do table.insert(out, tostring(id)) end
  elseif qop == 'status' then
    out = read_status(hex16(tonumber(ARGV[11])))
  elseif qop == 'poll' then
    local granted, next_at = serve_line(max_o)
    out = { now_text, next_at and absolute(next_at) or '', #granted }
    for _, id in ipairs(granted) do table.insert(out, tostring(id)) end
    for _, v in ipairs(read_status(hex16(tonumber(ARGV[11])))) do table.insert(out, v) end
  elseif qop == 'leave' then
    local idh = hex16(tonumber(ARGV[11]))
    if take(idh) then out = { 'w' } else out = read_status(idh) end
  elseif qop == 'pause' or qop == 'resume' then
    redis.call('HSET', LK.m, 'p', qop == 'pause' and '1' or '0')
    out = {}
  elseif qop == 'stats' then
    writes = false
    local m = redis.call('HMGET', LK.m, 'p', 'g', 'ov', 'pr', 'to', 'ev')
    out = {}
    for i = 1, 6 do out[i] = tonumber(m[i] or '0') or 0 end
    local oldest = redis.call('ZRANGE', LK.i, 0, 0)[1]
    out[7] = oldest and string.format('%d', -offset(waiter(oldest).joined)) or ''
    local pairs_ = redis.call('HGETALL', LK.c)
    local ps = {}
    for i = 1, #pairs_, 2 do table.insert(ps, { tonumber(pairs_[i]), tonumber(pairs_[i + 1]) }) end
    table.sort(ps, function(a, b) return a[1] > b[1] end)
    for _, pc in ipairs(ps) do
      table.insert(out, pc[1])
      table.insert(out, pc[2])
    end
  else
    return redis.error_reply('sluice: unknown queue operation ' .. tostring(qop))
  end

  if writes then
    -- Every key of the line outlives its last deadline (and the floor TTL), so a line that
    -- nobody serves any more is gone in the end.
    local ttl = min_ttl_ms
    local nd = next_deadline()
    if nd ~= nil then
      local ms = floor((nd + 999999) / 1000000) + 60000
      if ms > ttl then ttl = ms end
    end
    if ttl < 60000 then ttl = 60000 end
    for _, name in ipairs(LINE_KEYS) do redis.call('PEXPIRE', LK[name], ttl) end
  end
  return out
end

redis.register_function('sluice', call)
redis.register_function('sluice_queue', queue_call)
