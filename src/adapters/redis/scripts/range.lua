-- Read runs through an index (a job's runs, or the unfinished runs) in one consistent
-- step: the index entries in a lexicographic range and each entry's run hash. Read only.
-- Owned by run_log.rs.
--
-- KEYS[1] the index zset  ARGV[1] {p}  ARGV[2] 'rev' (newest first) or 'fwd'
-- ARGV[3], ARGV[4] range bounds in the order ZRANGEBYLEX / ZREVRANGEBYLEX take them
-- ARGV[5] most entries
-- Returns {member, run hash (flat), member, run hash, ...}; a hash is empty when its
-- run vanished.
local cmd = 'ZRANGEBYLEX'
if ARGV[2] == 'rev' then
  cmd = 'ZREVRANGEBYLEX'
end
local members = redis.call(cmd, KEYS[1], ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, m in ipairs(members) do
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. ':run:' .. string.sub(m, 17))
end
return out
