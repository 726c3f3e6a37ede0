//! Finds where one complete reply ends, for clients that only need to count replies and
//! spot errors (the load generator). Iterative: nested aggregates cost no stack. Pure.

use crate::ProtocolError;

/// One complete reply at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedReply {
    /// Its length in bytes.
    pub len: usize,
    /// True when it is (or, for an aggregate, its first element is) an error reply.
    pub is_error: bool,
}

/// Measures the reply at the start of `buf`: `None` when it has not fully arrived.
pub fn scan_reply(buf: &[u8]) -> Result<Option<ScannedReply>, ProtocolError> {
    let mut pos = 0;
    // Elements still expected, per open aggregate.
    let mut pending: Vec<u64> = Vec::new();
    let mut is_error = false;
    let mut first = true;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(line_end) = memchr::memchr(b'\n', &buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos + 1..pos + line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let after_line = pos + line_end + 1;
        if first {
            is_error = matches!(kind, b'-' | b'!');
            first = false;
        }
        let count = |line: &[u8]| -> Result<i64, ProtocolError> {
            crate::parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)
        };
        pos = match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => after_line,
            b'$' | b'=' | b'!' => {
                let len = count(line)?;
                if len < 0 {
                    after_line
                } else {
                    let end = after_line + len as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    end
                }
            }
            b'*' | b'~' | b'>' | b'%' => {
                let n = count(line)?;
                let elements = if kind == b'%' {
                    n.max(0) as u64 * 2
                } else {
                    n.max(0) as u64
                };
                if elements > 0 {
                    pending.push(elements + 1);
                }
                after_line
            }
            other => return Err(ProtocolError::ExpectedBulk(other as char)),
        };
        // This value completes one element of each aggregate it closes.
        loop {
            match pending.last_mut() {
                None => return Ok(Some(ScannedReply { len: pos, is_error })),
                Some(left) => {
                    *left -= 1;
                    if *left == 0 {
                        pending.pop();
                    } else {
                        break;
                    }
                }
            }
        }
        if pending.is_empty() {
            return Ok(Some(ScannedReply { len: pos, is_error }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Protocol, ReplyWriter};

    #[test]
    fn measures_every_reply_shape() {
        let mut out = Vec::new();
        let mut w = ReplyWriter::new(&mut out, Protocol::Resp3);
        w.array(3);
        w.bulk(b"a");
        w.null();
        w.map(1);
        w.bulk(b"k");
        w.array(0);
        let full = w.len();
        w.error("ERR next");
        assert_eq!(
            scan_reply(&out).unwrap(),
            Some(ScannedReply {
                len: full,
                is_error: false
            })
        );
        assert_eq!(
            scan_reply(&out[full..]).unwrap(),
            Some(ScannedReply {
                len: out.len() - full,
                is_error: true
            })
        );
        for cut in 0..full {
            assert_eq!(scan_reply(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_costs_no_recursion() {
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(scan_reply(&deep).unwrap().unwrap().len, deep.len());
    }
}
