-- The script environment, built once per Lua state (chunk name "=ringkv", so frames of
-- this file are told apart from a script's). It receives `hidden`, a table no script can
-- reach, and `native`, the functions written in Rust (C functions to Lua, so a script's
-- frame stays on the stack under them, as under Redis's own). It returns the globals
-- scripts see, a read-only proxy, and leaves the runner in `hidden.run`.
local hidden, native = ...
local G = _G
local error, type, rawset, tostring, setmetatable, pairs =
    error, type, rawset, tostring, setmetatable, pairs
local error_table, where, caught, handed = native.error_table, native.where, native.caught,
    native.handed
local raw_pcall, raw_xpcall = pcall, xpcall

-- What a script may not reach, as in Redis 7.0.
for _, name in pairs({ 'dofile', 'loadfile', 'print', 'getfenv', 'setfenv', 'newproxy',
    'module', 'require', 'debug', 'os', 'io', 'package' }) do
  G[name] = nil
end

-- Turns any error into Redis's error table and adds where the script raised it.
local function handler(err)
  if type(err) ~= 'table' then
    err = error_table(err)
  end
  local source, line = where()
  if source then
    err.source = source
    err.line = line
  end
  return err
end

-- KEYS and ARGV from the arguments: the keys' table is the arguments' own, the ARGV part
-- moved out of it (two tables a call, not three: a short script's run is mostly garbage).
local function split(nkeys, ...)
  local keys, argv = { ... }, {}
  for i = nkeys + 1, select('#', ...) do
    argv[i - nkeys] = keys[i]
    keys[i] = nil
  end
  return keys, argv
end

-- Runs a script: KEYS and ARGV are built here from the arguments after `nkeys` (cheaper
-- than from Rust, one API call at a time; a negative `nkeys` means Rust set them), then
-- the script runs under the handler.
hidden.run = function(f, nkeys, ...)
  if nkeys >= 0 then
    local keys, argv = split(nkeys, ...)
    rawset(G, 'KEYS', keys)
    rawset(G, 'ARGV', argv)
  end
  return raw_xpcall(f, handler)
end

-- Runs a library function (FCALL): its keys and arguments are passed to it as tables.
hidden.run_function = function(f, nkeys, ...)
  local keys, argv = split(nkeys, ...)
  return raw_xpcall(function() return f(keys, argv) end, handler)
end

-- Libraries' code sees, while it loads, only the loading API (a `redis` with
-- register_function and log); the functions it registers see the full globals when they
-- run, as in Redis 7.0.
local function missing(_, name)
  error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
end
local load_redis = setmetatable({
  register_function = native.register_function,
  log = native.redis.log,
  setresp = native.redis.setresp,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REDIS_VERSION = native.redis.REDIS_VERSION,
  REDIS_VERSION_NUM = native.redis.REDIS_VERSION_NUM,
}, { __index = missing, __newindex = function() error('Attempt to modify a readonly table', 2) end })
local load_api = setmetatable({ redis = load_redis }, { __index = missing })
local library_api = G
hidden.library_env = setmetatable({}, {
  __index = function(_, name)
    local value = rawget(library_api, name)
    if value == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return value
  end,
  __newindex = function() error('Attempt to modify a readonly table', 2) end,
  __metatable = {},
})
hidden.load_library = function(chunk)
  library_api = load_api
  local ok, err = raw_xpcall(chunk, handler)
  library_api = G
  return ok, err
end

-- Redis 7's pcall: an error table is caught as its text.
local function finish(ok, ...)
  if ok then return true, ... end
  return false, caught((...))
end
G.pcall = function(...) return finish(raw_pcall(...)) end
-- A script's own handler sees an error a Rust function raised as Redis's C one would
-- raise it: a table from redis.call, a string from the libraries.
G.xpcall = function(f, h)
  return raw_xpcall(f, function(e) return h(handed(e)) end)
end

-- A table no script can change: writes fail as Redis 7's read-only tables fail them
-- (rawset too, so no script can leave state behind for the next one).
local proxies = setmetatable({}, { __mode = 'k' })
local function readonly(t, metatable)
  local proxy = setmetatable({}, {
    __index = t,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
    __metatable = metatable or false,
  })
  proxies[proxy] = true
  return proxy
end
G.rawset = function(t, k, v)
  if proxies[t] then error('Attempt to modify a readonly table', 0) end
  return rawset(t, k, v)
end

-- The real `redis` table: `call` and `pcall` are set for each run.
hidden.redis = native.redis
G.redis = readonly(native.redis)
G.cjson = readonly(native.cjson)
G.cmsgpack = readonly(native.cmsgpack)
G.bit = readonly(native.bit)
G.struct = readonly(native.struct)
G.string = readonly(string)
G.math = readonly(math)
G.table = readonly(table)
G.coroutine = readonly(coroutine)

-- Globals: reads of a missing name are errors, writes always are.
setmetatable(G, {
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
  end,
})
-- getmetatable(_G) shows a table, as Redis's globals have one.
local globals = readonly(G, {})
rawset(G, '_G', globals)
return globals
