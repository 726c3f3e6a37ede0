#!/usr/bin/env python3
"""Sends the same commands to redis-server and to ringkv and compares the replies byte for
byte, over RESP2 and RESP3: streams, logical databases, Lua scripting, function
libraries, pub/sub, keyspace notifications, client tracking, and the verbatim
Lua scripts of libraries people run on Redis (redis-py's Lock, limits, rate-limit-redis,
django-redis, Laravel).

usage: fidelity.py REDIS_PORT RINGKV_PORT

Prints every mismatch and exits non-zero when there is one that is not a known, listed
difference. Commands whose replies are orderless (KEYS) are compared as multisets; a reply
holding a TTL may differ by a few milliseconds between the two servers.
"""
import os
import re
import socket
import sys
import time

sys.setrecursionlimit(100000)


def encode(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self):
        """One reply as (bytes, tree): the raw bytes and a parsed form."""
        line = self.line()
        kind, rest = line[:1], line[1:]
        raw = line + b"\r\n"
        if kind in b"+-:_,#(":
            return raw, (kind, rest)
        if kind in b"$=!":
            n = int(rest)
            if n < 0:
                return raw, (kind, None)
            body = self.exact(n + 2)
            return raw + body, (kind, body[:-2])
        if kind in b"*~>%|":
            n = int(rest)
            count = 2 * n if kind in b"%|" else n
            items = []
            for _ in range(max(count, 0)):
                r, tree = self.reply()
                raw += r
                items.append(tree)
            return raw, (kind, items if n >= 0 else None)
        raise ValueError(f"unparsable reply {line!r}")

    def call(self, args):
        self.sock.sendall(encode(args))
        return self.reply()

    def pending(self, wait=0.05):
        """True when more bytes arrive within `wait` seconds."""
        if self.buf:
            return True
        self.sock.settimeout(wait)
        try:
            self._fill()
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(10)


def same_ttl(a, b, slack=5):
    """Trees equal but for integers that may differ by a few (TTLs, times)."""
    if a[0] != b[0]:
        return False
    if a[0] == b":":
        return abs(int(a[1]) - int(b[1])) <= slack
    if isinstance(a[1], list) and isinstance(b[1], list):
        return len(a[1]) == len(b[1]) and all(same_ttl(x, y, slack) for x, y in zip(a[1], b[1]))
    return a == b


def same_unordered(a, b):
    if a[0] != b[0] or not isinstance(a[1], list) or not isinstance(b[1], list):
        return a == b
    return sorted(map(repr, a[1])) == sorted(map(repr, b[1]))


class Case:
    def __init__(self, args, how="exact", known=None, replies=1):
        self.args = args
        self.how = how  # exact | ttl | unordered | keyspace | skip
        self.known = known  # why a difference is accepted
        # How many replies the command draws (pub/sub answers once per channel, and a
        # message may come first): a count, (RESP2, RESP3), or None for all that arrive.
        self.replies = replies

    def reply_count(self, resp3):
        if isinstance(self.replies, tuple):
            return self.replies[1 if resp3 else 0]
        return self.replies


def run_suite(name, cases, redis_port, ringkv_port, resp3=False):
    redis_conn, ringkv_conn = Conn(redis_port), Conn(ringkv_port)
    if resp3:
        redis_conn.call(["HELLO", "3"])
        ringkv_conn.call(["HELLO", "3"])
    checked = mismatched = known = 0
    for case in cases:
        if isinstance(case, list):
            case = Case(case)
        if case.args and case.args[0] == "__sleep":
            time.sleep(case.args[1])
            continue
        a_raw, a = redis_conn.call(case.args)
        b_raw, b = ringkv_conn.call(case.args)
        count = case.reply_count(resp3)
        if count is None:
            # Everything either server sends within a moment (notifications and pushes).
            for conn, which in ((redis_conn, 0), (ringkv_conn, 1)):
                while conn.pending():
                    raw, tree = conn.reply()
                    if which == 0:
                        a_raw, a = a_raw + raw, (b"*", [a, tree])
                    else:
                        b_raw, b = b_raw + raw, (b"*", [b, tree])
            count = 1
        for _ in range(count - 1):
            a_more, b_more = redis_conn.reply(), ringkv_conn.reply()
            a_raw, b_raw = a_raw + a_more[0], b_raw + b_more[0]
            a, b = (b"*", [a, a_more[1]]), (b"*", [b, b_more[1]])
        checked += 1
        if case.how == "ttl":
            ok = same_ttl(a, b)
        elif case.how == "keyspace":
            # avg_ttl is Redis's estimate from its expiry sampling: when it last sampled
            # decides it, so it is left out (and the bulk's length with it).
            strip = lambda raw: re.sub(rb"avg_ttl=\d+", b"avg_ttl=", raw.split(b"\r\n", 1)[1])
            ok = strip(a_raw) == strip(b_raw)
        elif case.how == "unordered":
            ok = same_unordered(a, b)
        else:
            ok = a_raw == b_raw
        if ok:
            continue
        if case.known:
            known += 1
            continue
        mismatched += 1
        shown = [x if len(x) < 80 else x[:77] + "..." for x in map(str, case.args)]
        print(f"  MISMATCH [{name}{' RESP3' if resp3 else ''}] {shown}")
        print(f"    redis-server: {a_raw[:300]!r}")
        print(f"    ringkv:       {b_raw[:300]!r}")
    print(f"{name}{' (RESP3)' if resp3 else ''}: {checked} commands, {mismatched} mismatches, {known} known differences")
    return mismatched


def streams():
    cases = [
        ["FLUSHALL"],
        ["XADD", "s", "1-1", "a", "1"], ["XADD", "s", "1-1", "a", "1"], ["XADD", "s", "1-*", "b", "2"],
        ["XADD", "s", "2", "c", "3"], ["XADD", "s", "0-0", "a", "1"], ["XADD", "n", "0-*", "a", "1"],
        ["XADD", "s", "5-x", "a", "1"], ["XADD", "s", "*", "a"], ["XADD", "s", "maxlen", "~", "x", "*", "a", "1"],
        ["XADD", "s", "maxlen", "-1", "*", "a", "1"], ["XADD", "s", "maxlen", "1", "minid", "1", "*", "a", "1"],
        ["XADD", "s", "limit", "10", "*", "a", "1"], ["XADD", "s", "maxlen", "5", "limit", "10", "*", "a", "1"],
        ["XADD", "nope", "nomkstream", "*", "a", "1"], ["EXISTS", "nope"], ["XLEN", "s"], ["SET", "str", "x"],
        ["XLEN", "str"], ["XADD", "str", "*", "a", "1"], ["XRANGE", "s", "-", "+"], ["XRANGE", "s", "-", "+", "count", "2"],
        ["XRANGE", "s", "-", "+", "count", "0"], ["XRANGE", "s", "(1-1", "(10-1"], ["XRANGE", "s", "(-", "+"],
        ["XREVRANGE", "s", "+", "-", "count", "1"], ["XRANGE", "nope", "-", "+"], ["XDEL", "s", "1-1", "999-0"],
        ["XDEL", "nope", "bad"], ["XDEL", "s", "bad"], ["XINFO", "STREAM", "s"], ["XINFO", "STREAM", "s", "FULL"],
        ["XINFO", "STREAM", "nope"], ["XINFO", "GROUPS", "s"], ["XINFO", "CONSUMERS", "s", "g"], ["XINFO", "HELP"],
    ]
    cases += [["XADD", "t", f"{i}-0", "f", str(i)] for i in range(1, 1001)]
    cases += [
        ["XTRIM", "t", "maxlen", "~", "555"], ["XLEN", "t"], ["XTRIM", "t", "maxlen", "555"], ["XTRIM", "t", "minid", "900"],
        ["XTRIM", "t", "minid", "~", "950"], ["XTRIM", "t", "maxlen", "~", "10", "limit", "30"], ["XTRIM", "t", "limit", "5"],
        ["XINFO", "STREAM", "t"], ["XSETID", "t", "1-0"], ["XSETID", "t", "99999999999999-5", "maxdeletedid", "99999999999999-1", "entriesadded", "5000"],
        ["XINFO", "STREAM", "t"], ["XREAD", "COUNT", "1", "STREAMS", "s", "t", "0", "0"], ["XREAD", "STREAMS", "s", "t", "$", "$"],
        ["XREAD", "STREAMS", "s", "t", "0"], ["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"], ["XREAD", "STREAMS", "s", ">"],
        ["TYPE", "s"], ["OBJECT", "ENCODING", "s"],
        Case(["XADD", "y", "5-18446744073709551615", "a", "b"]),
        Case(["XADD", "y", "5-*", "a", "b"], known="redis 7.0.15 says 'Elements are too large' (a bug fixed later); ringkv names the id"),
    ]
    return cases


def databases():
    return [
        ["FLUSHALL"], ["SELECT", "1"], ["SET", "a", "1"], ["SET", "b", "2"], ["EXPIRE", "b", "100"], ["DBSIZE"],
        Case(["KEYS", "*"], how="unordered"), ["SELECT", "0"], ["DBSIZE"], ["GET", "a"], ["SET", "a", "zero"],
        ["SELECT", "16"], ["SELECT", "-1"], ["SELECT", "x"], ["SELECT", "99999999999"], ["SELECT", "2"],
        ["RPUSH", "l", "x"], ["SELECT", "1"], ["MOVE", "a", "0"], ["MOVE", "b", "2"], ["MOVE", "b", "1"],
        ["MOVE", "b", "99"], ["SELECT", "2"], Case(["KEYS", "*"], how="unordered"), Case(["TTL", "b"], how="ttl"),
        ["COPY", "b", "c", "DB", "0"], ["COPY", "b", "b"], ["COPY", "b", "b", "DB", "2"], ["COPY", "b", "c", "DB", "99"],
        ["SELECT", "0"], ["MGET", "a", "c"], Case(["INFO", "keyspace"], how="keyspace"), ["SWAPDB", "0", "2"], ["GET", "a"], ["DBSIZE"],
        Case(["INFO", "keyspace"], how="keyspace"), ["SWAPDB", "0", "x"], ["SWAPDB", "0", "16"], ["SELECT", "2"], ["FLUSHDB"], ["DBSIZE"],
        ["SELECT", "0"], Case(["INFO", "keyspace"], how="keyspace"), ["SWAPDB", "2", "0"], ["MULTI"], ["SELECT", "3"], ["SET", "m", "1"],
        ["EXEC"], ["GET", "m"], ["SELECT", "0"], ["FLUSHALL"], Case(["INFO", "keyspace"], how="keyspace"), ["CONFIG", "GET", "databases"],
    ]


def scripting():
    def s(body, *rest):
        return ["EVAL", body, *(rest or ("0",))]
    return [
        ["FLUSHALL"], ["SCRIPT", "FLUSH"],
        s("return x"), s("x = 1"), s("error('boom')"), s("return redis.call('nope')"), s("return redis.call('get')"),
        s("return redis.pcall('get')"), s("return redis.error_reply('My Error')"), s("return {err='My Error'}"),
        s("return {1,2,{3,'x'},nil,5}"), s("return 3.99"), s("return true"), s("return false"), s("syntax error here"),
        s("return KEYS[1]", "2", "a"), s("return 1", "-1"), s("return 1", "x"),
        ["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"], ["EVALSHA", "abc", "-1"],
        ["EVALSHA", "gggggggggggggggggggggggggggggggggggggggg", "-1"],
        s("return redis.call('blpop','l',0)"), s("return redis.status_reply('FINE')"), s("return {ok='A\\r\\nB'}"),
        s("return redis.sha1hex('')"), s("return redis.call()"), s("return redis.call('get', {})"),
        s("string.x = 1"), s("local t = loadstring('y = 1'); t(); return 1"),
        s("return tostring(1e15) .. ' ' .. tostring(0.1) .. ' ' .. tostring(2^53)"),
        s("return redis.call('set','k',1.5)"), s("return redis.call('get','k')"), ["EVAL_RO", "return redis.call('set','a',1)", "0"],
        s("#!lua flags=no-writes\nreturn redis.call('set','a',1)"), s("#!lua flags=bogus\nreturn 1"), s("#!python\nreturn 1"),
        s("#!lua flags=no-cluster,allow-stale\nreturn 1"),
        s("redis.setresp(4)"), s("return redis.set_repl(99)"), s("return redis.log(99, 'x')"), ["SCRIPT", "KILL"],
        ["SCRIPT", "LOAD", "return 1"], ["SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "ffff"],
        ["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"], ["SCRIPT", "FLUSH", "foo"],
        s("return cjson.decode('x')"), s("return string.rep()"), s("return bit.band('x')"), s("return struct.pack('q')"),
        s("return cjson.encode({1,2,{a=1}})"), s("return cjson.encode({a={}, b=1.5, c=1e20, d=true, e='x\"y/'})"),
        s("return cmsgpack.pack({1,2,'x', 1.5, -33, 70000, 2^63})"), s("return {cmsgpack.unpack_limit(cmsgpack.pack(1,2,3), 2)}"),
        s("return {bit.band(0xff, 0x0f), bit.lshift(1, 31), bit.tobit(2^32+1), bit.tohex(-1, 4)}"),
        s("return {struct.unpack('>I2 <h', struct.pack('>I2 <h', 258, -2))}"), s("return struct.size('s')"),
        s("redis.call('hset','h','a','1') return redis.call('hgetall','h')"), s("redis.setresp(3) return redis.call('hgetall','h')"),
        s("redis.setresp(3) return redis.call('get','nokey')"), s("return redis.pcall('incr','h')"),
        s("local ok, e = pcall(redis.call, 'incr', 'h'); return e"), s("local ok, e = pcall(cjson.decode, 'x'); return e"),
        s("return {map={a=1}}"), s("return {double=1.5}"), s("return {big_number='123'}"), s("return {set={a=true}}"),
        s("return redis.call('select', 1)"), s("return redis.call('xread','block','10','streams','s','$')"),
        # Replies of every kind a command gives back to the script, nested ones too, and
        # numbers as arguments (whole, fractional, past 2^53, negative zero).
        s("return redis.call('ping')"), s("return redis.call('lrange','nolist',0,-1)"),
        s("return redis.call('zadd','zz',1.5,'a',2^53,'b',-0.0,'c',1e20,'d')"),
        s("return redis.call('zrange','zz',0,-1,'withscores')"),
        s("redis.setresp(3) return redis.call('zrange','zz',0,-1,'withscores')"),
        s("redis.setresp(3) return {redis.call('zscore','zz','a'), redis.call('exists','zz')}"),
        s("redis.setresp(3) redis.call('sadd','ss','x') return redis.call('smembers','ss')"),
        s("return {redis.call('set','n',2^53+2), redis.call('get','n'), redis.call('set','n',-7), redis.call('incrby','n',-3.0)}"),
        s("return redis.call('mget','n','nokey','zz')"), s("return redis.pcall('incrby','n','x')"),
        s("return {pcall(redis.call, 'set', 'n', nil)}"), s("return redis.call('get', true)"),
        # What a script's own xpcall handler is given for each kind of error.
        s("return {xpcall(function() return redis.call('incr','zz') end, function(e) return e end)}"),
        s("return {xpcall(function() return redis.call('incr','zz') end, function(e) return type(e) end)}"),
        s("return {xpcall(function() return cjson.decode('x') end, function(e) return e end)}"),
        s("return {xpcall(function() error('boom') end, function(e) return e end)}"),
        s("return {xpcall(function() error({err='mine'}) end, function(e) return e end)}"),
        Case(s("local t = {} t[1] = t return t"), known="a table that contains itself is cut at another depth"),
    ]


def functions():
    """FUNCTION and FCALL: libraries load, list, delete and fail in Redis's words.
    FUNCTION DUMP is left out: its payload is each server's own format."""
    def lib(name, body):
        return "#!lua name=%s\n%s" % (name, body)
    cases = [
        ["FUNCTION", "FLUSH"], ["FLUSHALL"],
        ["FUNCTION","LOAD", lib("mylib", "redis.register_function('myfunc', function(keys, args) return args[1] end)")],
        ["FUNCTION","LOAD", lib("mylib", "redis.register_function('myfunc', function(keys, args) return args[1] end)")],
        ["FUNCTION","LOAD", lib("lib2", "redis.register_function('myfunc', function(keys, args) return 1 end)")],
        ["FUNCTION","LOAD", lib("lib3", "local x = 1")],
        ["FUNCTION","LOAD", lib("lib4", "redis.call('set','a','1')")],
        ["FUNCTION","LOAD", lib("lib5", "error('boom')")],
        ["FUNCTION","LOAD", lib("lib6", "redis.register_function('f-6', function() end)")],
        ["FUNCTION","LOAD", lib("lib7", "redis.register_function('f7')")],
        ["FUNCTION","LOAD", lib("lib8", "redis.register_function{function_name='f8', callback=function(keys, args) return redis.call('set', keys[1], args[1]) end, flags={'no-writes'}, description='desc'}")],
        ["FUNCTION","LOAD", lib("lib9", "redis.register_function{function_name='f9', callback=function() end, flags={'bogus'}}")],
        ["FCALL","myfunc","0","hello"], ["FCALL","nope","0"], ["FCALL_RO","myfunc","0","x"], ["FCALL","f8","1","k","v"],
        ["FUNCTION","LIST"], ["FUNCTION","STATS"], ["FUNCTION","DELETE","nope"], ["FCALL","myfunc","-1"],
        ["FUNCTION","LOAD", lib("lib10", "redis.register_function('f10', function(keys, args) return nosuch end)")], ["FCALL","f10","0"],
        ["FUNCTION","LOAD", "#!lua name=libx\nredis.register_function('fx', function() return 1 end"],
        ["FUNCTION","LOAD", lib("liby", "redis.register_function('fy', function() return 1 end) redis.register_function('fy', function() return 1 end)")],
        ["FUNCTION","LOAD", lib("libz", "return 1")],
        ["FUNCTION","LOAD", lib("libw", "redis.register_function{function_name='fw', callback=function() end, bogus=1}")],
        ["FUNCTION","LOAD", lib("libv", "redis.register_function{callback=function() end}")],
        ["FUNCTION","LOAD", lib("libu", "redis.register_function('fu', 'notfn')")],
        ["FUNCTION","LOAD", lib("libt", "redis.register_function('a','b','c')")],
        ["FUNCTION","RESTORE","garbage"], ["FUNCTION","LIST","WITHCODE","LIBRARYNAME","my*"], ["FUNCTION","LIST","foo"], ["FUNCTION","LIST","LIBRARYNAME"],
        ["FUNCTION","KILL"], ["FUNCTION","FLUSH","bogus"], ["FUNCTION","HELP"], ["EVAL","redis.register_function('x', function() end)","0"],
        ["FUNCTION","LOAD","REPLACE", lib("mylib", "redis.register_function('myfunc', function(keys, args) return #keys .. ':' .. #args end)")], ["FCALL","myfunc","2","a","b","c"],
        ["FUNCTION","LOAD","BOGUS", lib("mylib", "x")], ["FUNCTION","LOAD"], ["FUNCTION","LOAD", "return 1"], ["FUNCTION","LOAD", "#!python name=x\n"],
        ["FUNCTION","RESTORE","x","BOGUS"], ["FUNCTION","DELETE","lib8"], ["FUNCTION","LIST"], ["FUNCTION","STATS"],
        ["FCALL","myfunc","0"], ["FUNCTION","FLUSH"], ["FUNCTION","LIST"], ["FCALL","myfunc","0"],
        ["FUNCTION", "LOAD", lib("r3", "redis.register_function{function_name='r3f', callback=function() return 1 end, flags={'no-writes','allow-oom'}}")],
        ["FUNCTION", "LIST"], ["FUNCTION", "STATS"], ["FCALL_RO", "r3f", "0"], ["FUNCTION", "FLUSH"],
    ]
    listing = lambda args: Case(args, how="unordered") if args[:2] == ["FUNCTION", "LIST"] else args
    return [listing(c) for c in cases]


def pubsub():
    """Pub/sub on one connection: subscribed mode (RESP2), pushes (RESP3), a client's own
    messages, PUBSUB's introspection, and the output limit's CONFIG form."""
    many = lambda args, n: Case(args, replies=n)
    return [
        many(["SUBSCRIBE", "a", "b"], 2), ["GET", "x"], ["PING"], ["PING", "hi"], ["PING", "a", "b"],
        Case(["PSUBSCRIBE", "a*"]), many(["PUBLISH", "a", "m"], (1, 3)),
        # Redis lists a connection's channels in its dict's order, which a per-process
        # hash seed shuffles; ringkv in the order they were subscribed.
        Case(["UNSUBSCRIBE"], replies=2, known="channels in Redis's dict order"), Case(["PUNSUBSCRIBE"]), Case(["UNSUBSCRIBE"]), ["PING"], ["SUBSCRIBE"],
        Case(["SSUBSCRIBE", "s"]), many(["SPUBLISH", "s", "x"], (1, 2)), Case(["SUNSUBSCRIBE"]),
        ["PUBSUB", "NUMSUB", "a"], ["PUBSUB", "NUMSUB"], ["PUBSUB", "CHANNELS"], ["PUBSUB", "NUMPAT"],
        ["PUBSUB", "SHARDCHANNELS"], ["PUBSUB", "SHARDNUMSUB", "s"], ["PUBSUB", "HELP"], ["PUBSUB"],
        ["PUBSUB", "FOO"], ["PUBSUB", "NUMPAT", "x"], ["PUBLISH", "a", "m"], ["SPUBLISH", "a", "m"], ["PUBLISH", "a"],
        many(["UNSUBSCRIBE", "x", "y"], 2), Case(["PUNSUBSCRIBE"]), Case(["SUNSUBSCRIBE"]),
        many(["SUBSCRIBE", "a", "a"], 2), Case(["PSUBSCRIBE", "[a-c]*"]), many(["PUBLISH", "b", "z"], (1, 2)),
        ["MULTI"], ["RESET"], ["PUBSUB", "CHANNELS", "*"],
        ["CONFIG", "GET", "client-output-buffer-limit"],
        ["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 512kb 10"],
        ["CONFIG", "GET", "client-output-buffer-limit"],
        ["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 512kb"],
        ["CONFIG", "SET", "client-output-buffer-limit", "bogus 1 1 1"],
        ["CONFIG", "SET", "client-output-buffer-limit", "pubsub x 1 1"],
        ["CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"],
    ]


def notifications():
    """Keyspace notifications on one connection subscribed to every event: in RESP3 each
    command's events arrive as pushes before its reply (RESP2's subscribed mode refuses
    the commands alike on both servers)."""
    commands = """SET a 1;SET a 2 EX 100;SETNX a 3;SETEX c 10 x;MSET e 1 f 2;GETSET e 5;GETDEL e;
    GETEX f EX 100;GETEX f PERSIST;APPEND g x;SETRANGE g 5 y;INCR h;INCRBYFLOAT h 1.5;
    DEL a b zz;EXPIRE c 100;EXPIRE c -1;PERSIST f;RENAME f f2;COPY f2 f3;
    HSET h2 a 1 b 2;HSETNX h2 a 2;HINCRBY h2 n 1;HDEL h2 a b n;
    LPUSH l a b c;RPUSH l d;LPOP l;RPOP l 2;LSET l 0 z;LINSERT l BEFORE z y;LREM l 1 y;LTRIM l 1 0;
    RPUSH src a b;LMOVE src dst LEFT RIGHT;RPOPLPUSH src dst;LMPOP 1 dst LEFT COUNT 5;
    SADD s a b;SREM s a;SPOP s;SADD s1 a b;SADD s2 b;SMOVE s1 s2 a;SINTERSTORE d s1 s2;SUNIONSTORE d s1 s2;
    ZADD z 1 a 2 b;ZADD z INCR 5 a;ZINCRBY z 1 b;ZREM z a;ZADD z 3 c 4 d;ZREMRANGEBYRANK z 0 0;
    ZPOPMIN z;ZPOPMAX z 5;ZADD z1 1 a;ZUNIONSTORE zd 1 z1;ZRANGESTORE zr z1 0 -1;ZMPOP 1 z1 MIN;
    XADD x 1-1 a 1;XADD x MAXLEN 1 2-1 a 1;XDEL x 2-1;XTRIM x MAXLEN 0;XSETID x 5-5;
    SETBIT b 7 1;SETBIT b 7 1;BITFIELD b SET u8 0 255;BITOP AND bd b b;RPUSH sl 3 1 2;SORT sl STORE so"""
    cases = [["FLUSHALL"], ["CONFIG", "SET", "notify-keyspace-events", "KEA"],
             ["CONFIG", "GET", "notify-keyspace-events"], Case(["PSUBSCRIBE", "__key*__:*"])]
    # Redis writes a sorted-set pop's events inside its array reply (between the header
    # and the elements); ringkv sends them before the reply.
    inside = "pushes inside the array reply in Redis, before it in ringkv"
    cases += [Case(c.split(), replies=None,
                   known=inside if c.split()[0] in ("ZPOPMIN", "ZPOPMAX", "ZMPOP") else None)
              for c in commands.replace("\n", "").split(";")]
    # The `n` class: a key created by a write, before the write's own event.
    cases += [["CONFIG", "SET", "notify-keyspace-events", "KEAn"]]
    cases += [Case(c.split(), replies=None) for c in ("SET fresh 1", "SET fresh 2", "HSET fresh2 f v",
                                                       "DEL fresh", "LPUSH fresh 1")]
    # The `m` class: every read look-up of a missing key, once per key (write look-ups
    # and OBJECT, MEMORY USAGE, RANDOMKEY not); with `n`, a write's keymiss comes first.
    misses = """RANDOMKEY;GET g1;MGET m1 m2;HGET h1 f;HGETALL h1;LRANGE l1 0 -1;LLEN l1;EXISTS e1 e2;TYPE t1;
    TTL t1;PTTL t1;EXPIRETIME t1;PEXPIRETIME t1;STRLEN s1;SMEMBERS s1;SISMEMBER s1 x;ZSCORE z1 m;
    ZRANGE z1 0 -1;XRANGE x1 - +;GETRANGE g1 0 1;SUBSTR g1 0 1;DUMP d1;OBJECT ENCODING o1;SORT_RO so1;LCS a1 a2;
    SCARD s1;HLEN h1;GETEX g1;GETDEL g1;INCR i1;APPEND ap1 x;SUNION s1 s2;TOUCH t1;MEMORY USAGE m1;
    BITCOUNT b1;GETBIT b1 0;HEXISTS h1 f;ZCARD z1;XLEN x1;LINDEX l1 0;LPOS l1 x;SRANDMEMBER s1;
    ZRANK z1 m;HSTRLEN h1 f;HRANDFIELD h1;SINTERCARD 2 s1 s2;ZINTERCARD 1 z1;BITPOS b1 1;
    BITFIELD_RO b1 GET u8 0;LMPOP 1 l1 LEFT;COPY c1 c2;RENAME r1 r2;SMISMEMBER s1 a;ZMSCORE z1 a;
    XREAD COUNT 1 STREAMS x1 0;XINFO STREAM x1;ZRANDMEMBER z1;SINTER s1 s2;ZUNION 2 z1 z2;SDIFF s1 s2;
    HMGET h1 a;HKEYS h1;HVALS h1;ZCOUNT z1 0 1;ZLEXCOUNT z1 - +;ZREVRANK z1 m;SSCAN s1 0;HSCAN h1 0;
    ZSCAN z1 0;SMOVE s1 s2 a;LMOVE l1 l2 LEFT LEFT;RPOPLPUSH l1 l2;SINTERSTORE d s1 s2;
    SDIFFSTORE d s1 s2;ZUNIONSTORE d 1 z1;SORT so1;BITOP AND d b1 b2;WATCH w1;UNWATCH"""
    cases += [["FLUSHALL"], ["CONFIG", "SET", "notify-keyspace-events", "KEm"]]
    # Redis looks up MGET's keys while writing its array, so in RESP3 their keymiss pushes
    # sit between the elements; ringkv sends them before the reply.
    between = "pushes between the array's elements in Redis, before the reply in ringkv"
    cases += [Case(c.split(), replies=None, known=between if c.startswith("MGET") else None)
              for c in misses.replace("\n", "").split(";")]
    cases += [["CONFIG", "SET", "notify-keyspace-events", "KEAmn"]]
    # GETSET replies before it sets in Redis, so in RESP3 `new` follows the reply.
    after = "new after the reply in Redis, before it in ringkv"
    cases += [Case(c.split(), replies=None, known=after if c.startswith("GETSET") else None)
              for c in ("GETSET gs 1", "GET gs", "GET gone", "EXISTS gs gone")]
    cases += [["RESET"], ["CONFIG", "SET", "notify-keyspace-events", "Elg$x"],
              ["CONFIG", "GET", "notify-keyspace-events"], ["CONFIG", "SET", "notify-keyspace-events", "Kq"],
              ["CONFIG", "SET", "notify-keyspace-events", ""], ["FLUSHALL"]]
    return cases


def tracking():
    """CLIENT TRACKING on one connection: its checks and errors, TRACKINGINFO, OPTIN and
    OPTOUT, and (in RESP3) the invalidation its own write causes, after the reply."""
    commands = """FLUSHALL;CLIENT TRACKINGINFO;CLIENT GETREDIR;CLIENT TRACKING ON;CLIENT GETREDIR;CLIENT TRACKINGINFO;
    GET k;MGET k k2;SET k 1;SET k 2;GET k;SET k2 x;HGET h f;HSET h f v;CLIENT TRACKING ON NOLOOP;GET k;SET k 3;
    CLIENT TRACKING ON BCAST;CLIENT TRACKING OFF;CLIENT TRACKING ON PREFIX x;CLIENT TRACKING ON OPTIN OPTOUT;
    CLIENT TRACKING ON BCAST OPTIN;CLIENT TRACKING ON REDIRECT 99999;CLIENT TRACKING ON BOGUS;CLIENT TRACKING MAYBE;
    CLIENT CACHING YES;CLIENT TRACKING ON BCAST PREFIX a PREFIX ab;CLIENT TRACKING ON OPTIN;CLIENT CACHING NO;
    CLIENT CACHING MAYBE;GET o1;SET o1 x;CLIENT CACHING YES;CLIENT TRACKINGINFO;GET o2;SET o2 x;
    CLIENT TRACKING ON OPTOUT;CLIENT TRACKING OFF;CLIENT TRACKING ON OPTOUT;CLIENT CACHING NO;GET p1;SET p1 x;GET p2;
    SET p2 x;CLIENT TRACKING OFF;CLIENT TRACKING ON BCAST PREFIX user: PREFIX sess:;CLIENT TRACKINGINFO;
    CLIENT TRACKING ON BCAST PREFIX us;SET user:1 x;SET other y;FLUSHALL;CLIENT TRACKING OFF;CLIENT TRACKINGINFO"""
    return [Case(c.split(), replies=None) for c in commands.replace("\n", "").split(";")]


def library_scripts():
    """The verbatim scripts of libraries, with the arguments they pass."""
    from redis.lock import Lock
    import limits

    lua_dir = os.path.join(os.path.dirname(limits.__file__), "resources", "redis", "lua_scripts")

    def limits_script(name):
        with open(os.path.join(lua_dir, name + ".lua")) as f:
            return f.read()

    # django-redis `incr` (django_redis/client/default.py), verbatim.
    django_incr = """
            local exists = redis.call('EXISTS', KEYS[1])
            if (exists == 1) then
                return redis.call('INCRBY', KEYS[1], ARGV[1])
            else return false end
            """
    # Laravel Illuminate\\Cache\\LuaScripts::add(), verbatim.
    laravel_add = "return redis.call('exists',KEYS[1])<1 and redis.call('setex',KEYS[1],ARGV[2],ARGV[1])"
    # rate-limit-redis source/scripts.ts, after its whitespace trimming.
    rate_limit_increment = "\n".join([
        'local totalHits = redis.call("INCR", KEYS[1])',
        'local timeToExpire = redis.call("PTTL", KEYS[1])',
        'if timeToExpire <= 0 or ARGV[1] == "1"',
        "then",
        'redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))',
        "timeToExpire = tonumber(ARGV[2])",
        "end",
        "return { totalHits, timeToExpire }",
    ])
    rate_limit_get = "\n".join([
        'local totalHits = redis.call("GET", KEYS[1])',
        'local timeToExpire = redis.call("PTTL", KEYS[1])',
        "return {",
        "totalHits,",
        "timeToExpire",
        "}",
    ])
    now = "1700000000"
    cases = [["FLUSHALL"]]
    # redis-py Lock: release, extend, reacquire, with the right token and a wrong one.
    cases += [["SET", "lock", "tok", "PX", "10000"]]
    for body, args in [
        (Lock.LUA_EXTEND_SCRIPT, ["1", "lock", "tok", "5000", "0"]),
        (Lock.LUA_EXTEND_SCRIPT, ["1", "lock", "bad", "5000", "1"]),
        (Lock.LUA_REACQUIRE_SCRIPT, ["1", "lock", "tok", "20000"]),
        (Lock.LUA_RELEASE_SCRIPT, ["1", "lock", "bad"]),
        (Lock.LUA_RELEASE_SCRIPT, ["1", "lock", "tok"]),
        (Lock.LUA_RELEASE_SCRIPT, ["1", "lock", "tok"]),
    ]:
        cases.append(Case(["EVAL", body, *args], how="ttl"))
    # limits: fixed window (incr_expire), moving window, sliding window counter.
    for _ in range(3):
        cases.append(Case(["EVAL", limits_script("incr_expire"), "1", "LIMITS:fixed", "60", "1"], how="ttl"))
    for i in range(4):
        cases.append(Case(["EVAL", limits_script("acquire_moving_window"), "1", "LIMITS:moving",
                           str(int(now) + i), "3", "60", "1"], how="ttl"))
    cases.append(Case(["EVAL", limits_script("moving_window"), "1", "LIMITS:moving", str(int(now) - 60), "3"], how="ttl"))
    for i in range(4):
        cases.append(Case(["EVAL", limits_script("acquire_sliding_window"), "2", "LIMITS:prev", "LIMITS:cur",
                           "3", "60", "1"], how="ttl"))
    cases.append(Case(["EVAL", limits_script("sliding_window"), "2", "LIMITS:prev", "LIMITS:cur", "60"], how="ttl"))
    cases.append(Case(["EVAL", limits_script("clear_keys"), "1", "LIMITS:*"], how="exact"))
    # django-redis incr, Laravel Cache::add, rate-limit-redis increment and get.
    cases += [
        ["EVAL", django_incr, "1", "dj", "5"], ["SET", "dj", "10"], ["EVAL", django_incr, "1", "dj", "5"],
        ["EVAL", laravel_add, "1", "lv", "value", "60"], ["EVAL", laravel_add, "1", "lv", "other", "60"],
        Case(["EVAL", rate_limit_increment, "1", "rl", "0", "60000"], how="ttl"),
        Case(["EVAL", rate_limit_increment, "1", "rl", "0", "60000"], how="ttl"),
        Case(["EVAL", rate_limit_get, "1", "rl"], how="ttl"),
        Case(["EVAL", rate_limit_get, "1", "absent"], how="ttl"),
    ]
    return cases


def main():
    redis_port, ringkv_port = int(sys.argv[1]), int(sys.argv[2])
    bad = 0
    for name, suite in [("streams", streams), ("databases", databases), ("scripting", scripting), ("functions", functions), ("pubsub", pubsub),
                        ("notifications", notifications), ("tracking", tracking),
                        ("library scripts", library_scripts)]:
        for resp3 in (False, True):
            bad += run_suite(name, suite(), redis_port, ringkv_port, resp3)
    print(f"{bad} unexpected mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
