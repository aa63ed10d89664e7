// The Lua scripts that make shared state atomic in Redis: a script runs alone on the server,
// so two nodes taking the last token of one bucket cannot both get it. Time comes from the
// server (TIME), so the nodes' clocks need not agree to the millisecond.

import type { RedisClient } from "bun";

export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: new Bun.CryptoHasher("sha1").update(source).digest("hex") };
}

/** Runs a script by its hash, loading it when the server does not know it (a restart, SCRIPT FLUSH). */
export async function run(c: RedisClient, s: Script, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  const rest = [String(keys.length), ...keys, ...args.map(String)];
  try {
    return await c.send("EVALSHA", [s.sha, ...rest]);
  } catch (err) {
    if (!/NOSCRIPT/.test((err as Error).message)) throw err;
    return c.send("EVAL", [s.source, ...rest]);
  }
}

/**
 * take_token(key, messages, window): the token bucket of state/token-bucket.ts. A bucket left
 * alone for a whole window is full again, which is the same as absent: that is its TTL.
 */
const TAKE_TOKEN = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function take_token(key, cap, win, now)
  local b = redis.call('HMGET', key, 't', 'a')
  local tokens = cap
  if b[1] then tokens = math.min(cap, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * cap / win) end
  local ok = tokens >= 1
  if ok then tokens = tokens - 1 end
  redis.call('HSET', key, 't', tostring(tokens), 'a', tostring(now))
  redis.call('PEXPIRE', key, win)
  return ok
end
`;

/** KEYS: buckets; ARGV: messages and window of each. The 0-based index of the first empty bucket (later ones untouched), or -1. */
export const TAKE = script(`${TAKE_TOKEN}
local now = now_ms()
for i, key in ipairs(KEYS) do
  if not take_token(key, tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]), now) then return i - 1 end
end
return -1
`);

/** KEYS[1]: a counter; ARGV[1]: its window (ms) from the first count. The count including this one. */
export const COUNT = script(`
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`);

/**
 * A new triplet within its network's budget. KEYS: triplet, index, [budget bucket];
 * ARGV: value, expiry (unix ms), index member, [messages, window]. 1 when written, 0 when the budget was spent.
 */
export const GREYLIST_NEW = script(`${TAKE_TOKEN}
if KEYS[3] and not take_token(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]), now_ms()) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return 1
`);

/**
 * A triplet that passed. KEYS: triplet, index, the network's passed set, the network's allowlist
 * key; ARGV: value, expiry (unix ms), member, [allowlist after N passed triplets, until (unix ms)].
 */
export const GREYLIST_PASS = script(`
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
if ARGV[4] then
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('PEXPIREAT', KEYS[3], ARGV[2])
  if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then redis.call('SET', KEYS[4], '1', 'PXAT', ARGV[5]) end
end
return 1
`);

/**
 * Index upkeep: KEYS[1] the index, ARGV[1] the key prefix of triplets, ARGV[2] where to start
 * (a ZRANGEBYLEX bound), ARGV[3] how many. Drops members whose triplet expired; returns the
 * last member looked at ("" at the end).
 */
export const SWEEP_INDEX = script(`
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(members) do
  if redis.call('EXISTS', ARGV[1] .. m) == 0 then redis.call('ZREM', KEYS[1], m) end
end
if #members < tonumber(ARGV[3]) then return '' end
return members[#members]
`);
