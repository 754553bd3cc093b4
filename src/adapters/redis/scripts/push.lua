-- Append dispatches to a region's stream while it holds fewer than its bound; the
-- caller keeps the rest. Owned by queue.rs; must not trim (MAXLEN drops the oldest
-- entries, which are the undelivered ones).
--
-- KEYS[1] {p}:dispatch:{region}  ARGV[1] most entries the stream may hold
-- ARGV[2] the entry field name  ARGV[3..] one payload per dispatch, in order
-- Returns how many were appended (a prefix of the payloads).
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local n = 0
for i = 3, #ARGV do
  if n >= room then
    break
  end
  redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i])
  n = n + 1
end
return n
