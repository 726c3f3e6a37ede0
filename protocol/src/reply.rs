//! Reply encoding for RESP2 and RESP3 into a caller-owned buffer. Commands describe their
//! reply through this writer; the connection loop owns the buffer and the socket. Types
//! RESP2 lacks (maps, sets, doubles, booleans, null) fall back the way Redis does.

/// The protocol a connection speaks, switched by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, the default.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

/// Appends replies to `out`.
#[derive(Debug)]
pub struct ReplyWriter<'a> {
    out: &'a mut Vec<u8>,
    protocol: Protocol,
}

impl<'a> ReplyWriter<'a> {
    /// A writer appending to `out` in `protocol`.
    pub fn new(out: &'a mut Vec<u8>, protocol: Protocol) -> Self {
        ReplyWriter { out, protocol }
    }

    /// The protocol replies are written in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Switches the protocol for the replies that follow (HELLO, RESET).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Bytes written so far (by this and earlier writers on the buffer).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True when the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Drops everything written after `len` (used to replace a partial reply).
    pub fn truncate(&mut self, len: usize) {
        self.out.truncate(len);
    }

    /// Inserts bytes that are already RESP at `at` (before a reply already written there).
    pub fn insert_raw(&mut self, at: usize, resp: &[u8]) {
        self.out.splice(at..at, resp.iter().copied());
    }

    /// Appends bytes that are already RESP.
    pub fn raw(&mut self, resp: &[u8]) {
        self.out.extend_from_slice(resp);
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.out.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string; `s` must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        self.out.push(b'+');
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// An error; `message` starts with its code (`ERR`, `WRONGTYPE`, …). Line breaks
    /// are replaced so a message can never break the framing.
    pub fn error(&mut self, message: &str) {
        self.out.push(b'-');
        self.out.extend(
            message
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
    }

    /// An integer.
    pub fn int(&mut self, value: i64) {
        self.out.push(b':');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// A bulk string.
    pub fn bulk(&mut self, value: &[u8]) {
        self.header(b'$', value.len());
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    /// A bulk string holding an integer's decimal text.
    pub fn bulk_int(&mut self, value: i64) {
        self.bulk(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A bulk string or, for `None`, the null bulk.
    pub fn bulk_or_null(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => self.bulk(v),
            None => self.null(),
        }
    }

    /// The null bulk string (`$-1` in RESP2, `_` in RESP3).
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.out.extend_from_slice(b"_\r\n"),
        }
    }

    /// The null array (`*-1` in RESP2, `_` in RESP3), as EXEC answers an aborted MULTI.
    pub fn null_array(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.extend_from_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.out.extend_from_slice(b"_\r\n"),
        }
    }

    /// An array header for `len` elements that follow.
    pub fn array(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// A map header for `len` key/value pairs that follow (a flat array in RESP2).
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len * 2),
            Protocol::Resp3 => self.header(b'%', len),
        }
    }

    /// A push header for `len` elements that follow: an out-of-band message (pub/sub,
    /// invalidation) in RESP3, an array in RESP2.
    pub fn push(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'>', len),
        }
    }

    /// A set header for `len` elements that follow (an array in RESP2).
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'~', len),
        }
    }

    /// A double (a bulk string in RESP2, as Redis sends it).
    pub fn double(&mut self, value: f64) {
        self.double_text(&format_double(value));
    }

    /// A sorted-set score: a double in RESP3, a bulk string in RESP2, in Redis's format
    /// ([`format_score`]).
    pub fn score(&mut self, value: f64) {
        self.double_text(&format_score(value));
    }

    /// A double already formatted: `,text` in RESP3, a bulk string in RESP2.
    fn double_text(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.out.push(b',');
                self.out.extend_from_slice(text.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A boolean (`:1`/`:0` in RESP2).
    pub fn boolean(&mut self, value: bool) {
        match self.protocol {
            Protocol::Resp2 => self.int(value as i64),
            Protocol::Resp3 => {
                self.out
                    .extend_from_slice(if value { b"#t\r\n" } else { b"#f\r\n" })
            }
        }
    }

    /// Verbatim text such as INFO's (a bulk string in RESP2).
    pub fn verbatim(&mut self, text: &[u8]) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.header(b'=', text.len() + 4);
                self.out.extend_from_slice(b"txt:");
                self.out.extend_from_slice(text);
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn header(&mut self, kind: u8, len: usize) {
        self.out.push(kind);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Formats a double the way Redis shows INCRBYFLOAT results: the shortest text that reads
/// back to the same value, with no exponent and no trailing `.0`; `inf`, `-inf`, `nan`.
pub fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if value == 0.0 {
        "0".to_string()
    } else {
        // Display never uses an exponent and prints the shortest round-trip digits.
        format!("{value}")
    }
}

/// A score as Redis formats it: the shortest digits that read back as the same double,
/// with `%g`'s exponent form below 1e-4 and from 1e17 on (`1e+300`, `1.5e-07`).
pub fn format_score(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let magnitude = value.abs();
    if (1e-4..1e17).contains(&magnitude) {
        return format!("{value}");
    }
    // Rust's `{:e}` gives "1.5e-7"; C's `%g` writes a sign and at least two digits.
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(digits) => ('-', digits),
        None => ('+', exponent),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(protocol: Protocol, f: impl FnOnce(&mut ReplyWriter<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut ReplyWriter::new(&mut out, protocol));
        out
    }

    #[test]
    fn scores_print_as_redis_prints_them() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e300, "1e+300"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (value, text) in cases {
            assert_eq!(format_score(value), text, "{value}");
        }
        assert_eq!(written(Protocol::Resp3, |w| w.score(2.5)), b",2.5\r\n");
        assert_eq!(written(Protocol::Resp2, |w| w.score(2.0)), b"$1\r\n2\r\n");
    }

    #[test]
    fn nulls_maps_and_doubles_follow_the_protocol_version() {
        assert_eq!(written(Protocol::Resp2, |w| w.null()), b"$-1\r\n");
        assert_eq!(written(Protocol::Resp3, |w| w.null()), b"_\r\n");
        assert_eq!(written(Protocol::Resp2, |w| w.map(2)), b"*4\r\n");
        assert_eq!(written(Protocol::Resp3, |w| w.map(2)), b"%2\r\n");
        assert_eq!(
            written(Protocol::Resp2, |w| w.double(10.5)),
            b"$4\r\n10.5\r\n"
        );
        assert_eq!(written(Protocol::Resp3, |w| w.double(10.5)), b",10.5\r\n");
        assert_eq!(written(Protocol::Resp3, |w| w.boolean(true)), b"#t\r\n");
    }

    #[test]
    fn an_error_message_cannot_break_the_framing() {
        assert_eq!(
            written(Protocol::Resp2, |w| w.error("ERR bad\r\nthing")),
            b"-ERR bad  thing\r\n"
        );
    }

    #[test]
    fn doubles_print_like_redis() {
        assert_eq!(format_double(3000.0), "3000");
        assert_eq!(format_double(10.6), "10.6");
        assert_eq!(format_double(-0.0), "0");
        assert_eq!(format_double(1e21), "1000000000000000000000");
        assert_eq!(format_double(f64::INFINITY), "inf");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use redis_protocol::resp2::types::OwnedFrame;

        #[derive(Debug, Clone)]
        enum Reply {
            Bulk(Vec<u8>),
            Int(i64),
            Simple(String),
            Null,
            Array(Vec<Reply>),
        }

        fn reply_strategy() -> impl Strategy<Value = Reply> {
            let leaf = prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Bulk),
                any::<i64>().prop_map(Reply::Int),
                "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Simple),
                Just(Reply::Null),
            ];
            leaf.prop_recursive(3, 40, 6, |inner| {
                proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
            })
        }

        fn write(w: &mut ReplyWriter<'_>, reply: &Reply) {
            match reply {
                Reply::Bulk(b) => w.bulk(b),
                Reply::Int(i) => w.int(*i),
                Reply::Simple(s) => w.simple(s),
                Reply::Null => w.null(),
                Reply::Array(items) => {
                    w.array(items.len());
                    items.iter().for_each(|i| write(w, i));
                }
            }
        }

        fn expected(reply: &Reply) -> OwnedFrame {
            match reply {
                Reply::Bulk(b) => OwnedFrame::BulkString(b.clone()),
                Reply::Int(i) => OwnedFrame::Integer(*i),
                Reply::Simple(s) => OwnedFrame::SimpleString(s.clone().into_bytes()),
                Reply::Null => OwnedFrame::Null,
                Reply::Array(items) => OwnedFrame::Array(items.iter().map(expected).collect()),
            }
        }

        proptest! {
            #[test]
            fn resp2_replies_decode_to_what_was_written(reply in reply_strategy()) {
                let mut out = Vec::new();
                write(&mut ReplyWriter::new(&mut out, Protocol::Resp2), &reply);
                let (frame, used) = redis_protocol::resp2::decode::decode(&out).unwrap().unwrap();
                prop_assert_eq!(used, out.len());
                prop_assert_eq!(frame, expected(&reply));
            }

            #[test]
            fn resp3_replies_are_complete_frames(reply in reply_strategy(), pairs in 0usize..4, d in any::<f64>()) {
                let mut out = Vec::new();
                let mut w = ReplyWriter::new(&mut out, Protocol::Resp3);
                w.map(pairs);
                for i in 0..pairs {
                    w.bulk(format!("k{i}").as_bytes());
                    write(&mut w, &reply);
                }
                w.double(d);
                w.boolean(d > 0.0);
                w.verbatim(b"text");
                let mut offset = 0;
                for _ in 0..4 {
                    let (_, used) = redis_protocol::resp3::decode::complete::decode(&out[offset..]).unwrap().unwrap();
                    offset += used;
                }
                prop_assert_eq!(offset, out.len());
            }
        }
    }
}
