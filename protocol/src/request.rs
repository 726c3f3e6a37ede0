//! The request parser: RESP arrays of bulk strings and inline commands, every complete
//! command in a buffer in one pass. Arguments are ranges into the caller's buffer (inline
//! arguments, which may need unescaping, live in a small scratch arena). Limits are checked
//! before anything is allocated, so a `$600000000` header costs nothing. A command whose
//! bulk payload has not fully arrived is remembered, so the next call resumes it instead of
//! scanning its headers again. No I/O here.

use crate::ProtocolError;

/// Parser limits; Redis's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest bulk argument accepted.
    pub max_bulk_len: usize,
    /// The most arguments one command may declare.
    pub max_multibulk_len: usize,
    /// The longest inline command, and the longest `*`/`$` header line.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Where one argument's bytes are: the connection buffer or the batch's scratch arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    in_scratch: bool,
}

/// The commands parsed from one buffer. Reused across reads to avoid allocation.
#[derive(Debug, Default)]
pub struct Batch {
    spans: Vec<Span>,
    commands: Vec<(usize, usize)>,
    scratch: Vec<u8>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every command, keeping the allocations.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.commands.clear();
        self.scratch.clear();
    }

    /// How many complete commands were parsed.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when no command was parsed.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The arguments of command `index`, read from `buf`, the buffer that was parsed.
    pub fn command<'a>(&'a self, buf: &'a [u8], index: usize) -> Args<'a> {
        let (first, count) = self.commands[index];
        Args {
            buf,
            scratch: &self.scratch,
            spans: &self.spans[first..first + count],
        }
    }
}

/// One command's arguments (the command name is argument 0). Never empty.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    scratch: &'a [u8],
    spans: &'a [Span],
}

impl<'a> Args<'a> {
    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Always false: empty commands are skipped by the parser.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i`.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let span = self.spans[i];
        let source = if span.in_scratch {
            self.scratch
        } else {
            self.buf
        };
        &source[span.start..span.end]
    }

    /// All arguments in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Copies the arguments out (for MULTI queues, which outlive the buffer).
    pub fn to_owned_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

/// Arguments built by the server itself (a command whose keys were renamed into a logical
/// database): they own their bytes and lend them out as [`Args`].
#[derive(Debug, Default, Clone)]
pub struct OwnedArgs {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

impl OwnedArgs {
    /// Arguments with these bytes, in order.
    pub fn new<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut owned = OwnedArgs::default();
        for arg in args {
            let start = owned.buf.len();
            owned.buf.extend_from_slice(arg);
            owned.spans.push(Span {
                start,
                end: owned.buf.len(),
                in_scratch: false,
            });
        }
        owned
    }

    /// Forgets every argument, keeping the memory (for reuse).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    /// Adds an argument at the end.
    pub fn push(&mut self, arg: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(arg);
        self.spans.push(Span {
            start,
            end: self.buf.len(),
            in_scratch: false,
        });
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True without arguments.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The arguments as a handler reads them.
    pub fn args(&self) -> Args<'_> {
        Args {
            buf: &self.buf,
            scratch: &[],
            spans: &self.spans,
        }
    }
}

/// The outcome of one parse call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes that belong to complete commands; the caller drops exactly these from the
    /// front of its buffer before the next call.
    pub consumed: usize,
    /// At least this many more bytes are needed to complete the next command (0 = unknown).
    pub need: usize,
}

/// A half-parsed array command; offsets are relative to its first byte, which is offset 0
/// of the next buffer because the caller drops everything before it.
#[derive(Debug, Default)]
struct Pending {
    argc: usize,
    spans: Vec<Span>,
    next: usize,
}

/// The resumable request parser of one connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    pending: Option<Pending>,
}

enum Step {
    /// A command ended at this offset (it may have been empty and skipped).
    Done(usize),
    /// More bytes are needed; the value is a hint of how many.
    Incomplete(usize),
}

impl RequestParser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            pending: None,
        }
    }

    /// Changes the limits (CONFIG SET); applies from the next command.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Parses every complete command in `buf` into `batch` (which it appends to).
    ///
    /// On error the commands before the bad one stay in `batch`: Redis runs them, then
    /// answers the error and closes the connection.
    pub fn parse(&mut self, buf: &[u8], batch: &mut Batch) -> Result<Parsed, ProtocolError> {
        let mut pos = 0;
        loop {
            if pos >= buf.len() {
                return Ok(Parsed {
                    consumed: pos,
                    need: 0,
                });
            }
            let step = if self.pending.is_some() || buf[pos] == b'*' {
                self.parse_multibulk(buf, pos, batch)?
            } else {
                self.parse_inline(buf, pos, batch)?
            };
            match step {
                Step::Done(end) => pos = end,
                Step::Incomplete(need) => {
                    return Ok(Parsed {
                        consumed: pos,
                        need,
                    });
                }
            }
        }
    }

    fn parse_multibulk(
        &mut self,
        buf: &[u8],
        start: usize,
        batch: &mut Batch,
    ) -> Result<Step, ProtocolError> {
        let mut pending = match self.pending.take() {
            Some(p) => {
                debug_assert_eq!(start, 0, "a pending command always resumes at offset 0");
                p
            }
            None => {
                let Some((count, after)) = read_header(
                    buf,
                    start + 1,
                    self.limits.max_inline_len,
                    ProtocolError::MultibulkHeaderTooBig,
                    ProtocolError::InvalidMultibulkLength,
                )?
                else {
                    return Ok(Step::Incomplete(0));
                };
                if count > self.limits.max_multibulk_len as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count <= 0 {
                    return Ok(Step::Done(after));
                }
                Pending {
                    argc: count as usize,
                    // Never trust the declared count for an allocation.
                    spans: Vec::with_capacity((count as usize).min(64)),
                    next: after - start,
                }
            }
        };
        let base = start;
        while pending.spans.len() < pending.argc {
            let pos = base + pending.next;
            if pos >= buf.len() {
                self.pending = Some(pending);
                return Ok(Step::Incomplete(0));
            }
            if buf[pos] != b'$' {
                return Err(ProtocolError::ExpectedBulk(buf[pos] as char));
            }
            let Some((len, data_start)) = read_header(
                buf,
                pos + 1,
                self.limits.max_inline_len,
                ProtocolError::BulkHeaderTooBig,
                ProtocolError::InvalidBulkLength,
            )?
            else {
                self.pending = Some(pending);
                return Ok(Step::Incomplete(0));
            };
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let data_end = data_start + len as usize;
            if buf.len() < data_end + 2 {
                let need = data_end + 2 - buf.len();
                self.pending = Some(pending);
                return Ok(Step::Incomplete(need));
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            pending.spans.push(Span {
                start: data_start - base,
                end: data_end - base,
                in_scratch: false,
            });
            pending.next = data_end + 2 - base;
        }
        let first = batch.spans.len();
        batch.spans.extend(pending.spans.iter().map(|s| Span {
            start: s.start + base,
            end: s.end + base,
            in_scratch: false,
        }));
        batch.commands.push((first, pending.argc));
        Ok(Step::Done(base + pending.next))
    }

    fn parse_inline(
        &mut self,
        buf: &[u8],
        start: usize,
        batch: &mut Batch,
    ) -> Result<Step, ProtocolError> {
        let Some(newline) = memchr::memchr(b'\n', &buf[start..]) else {
            if buf.len() - start > self.limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(Step::Incomplete(0));
        };
        if newline > self.limits.max_inline_len {
            return Err(ProtocolError::InlineTooBig);
        }
        let mut line = &buf[start..start + newline];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let first = batch.spans.len();
        split_inline(line, &mut batch.scratch, &mut batch.spans)?;
        let count = batch.spans.len() - first;
        if count > 0 {
            batch.commands.push((first, count));
        }
        Ok(Step::Done(start + newline + 1))
    }
}

/// Reads a `<integer>\r\n` header starting at `from`. `None` means not all of it arrived.
fn read_header(
    buf: &[u8],
    from: usize,
    max_len: usize,
    too_big: ProtocolError,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[from.min(buf.len())..];
    let Some(cr) = memchr::memchr(b'\r', &window[..window.len().min(max_len + 1)]) else {
        if window.len() > max_len {
            return Err(too_big);
        }
        return Ok(None);
    };
    if cr + 1 >= window.len() {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(invalid);
    }
    let value = parse_i64(&window[..cr]).ok_or(invalid)?;
    Ok(Some((value, from + cr + 2)))
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: optional `-`, no `+`,
/// no leading zeros, no spaces, within `i64`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return if negative { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    if digits.len() > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// Splits an inline command the way Redis's `sdssplitargs` does: whitespace separates,
/// double quotes take C escapes (`\n`, `\x41`, …), single quotes take only `\'`.
fn split_inline(
    line: &[u8],
    scratch: &mut Vec<u8>,
    spans: &mut Vec<Span>,
) -> Result<(), ProtocolError> {
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = scratch.len();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                if i >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                match line[i] {
                    b'\\'
                        if i + 3 < line.len()
                            && line[i + 1] == b'x'
                            && line[i + 2].is_ascii_hexdigit()
                            && line[i + 3].is_ascii_hexdigit() =>
                    {
                        scratch.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    b'\\' if i + 1 < line.len() => {
                        i += 1;
                        scratch.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    b'"' => {
                        if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    other => scratch.push(other),
                }
            } else if in_single {
                if i >= line.len() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                match line[i] {
                    b'\\' if i + 1 < line.len() && line[i + 1] == b'\'' => {
                        i += 1;
                        scratch.push(b'\'');
                    }
                    b'\'' => {
                        if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    other => scratch.push(other),
                }
            } else {
                if i >= line.len() || line[i].is_ascii_whitespace() {
                    break;
                }
                match line[i] {
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => scratch.push(other),
                }
            }
            i += 1;
        }
        spans.push(Span {
            start,
            end: scratch.len(),
            in_scratch: true,
        });
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Result<Parsed, ProtocolError>, Vec<Vec<Vec<u8>>>) {
        let mut parser = RequestParser::default();
        let mut batch = Batch::new();
        let result = parser.parse(input, &mut batch);
        let commands = (0..batch.len())
            .map(|i| batch.command(input, i).to_owned_vec())
            .collect();
        (result, commands)
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn pipelined_commands_are_all_parsed_in_one_pass() {
        let input = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n";
        let (result, commands) = parse_all(input);
        assert_eq!(result.unwrap().consumed, input.len());
        assert_eq!(
            commands,
            vec![
                words(&["PING"]),
                words(&["SET", "k", "v"]),
                words(&["PING"])
            ]
        );
    }

    #[test]
    fn a_huge_bulk_header_is_rejected_before_any_allocation() {
        let (result, _) = parse_all(b"*2\r\n$3\r\nSET\r\n$600000000\r\n");
        assert_eq!(result, Err(ProtocolError::InvalidBulkLength));
    }

    #[test]
    fn negative_lengths_are_protocol_errors() {
        assert_eq!(
            parse_all(b"*1\r\n$-5\r\n").0,
            Err(ProtocolError::InvalidBulkLength)
        );
        // A non-positive count is an empty command, skipped as Redis does.
        let input = b"*-1\r\n*0\r\nPING\r\n";
        let (result, commands) = parse_all(input);
        assert_eq!(result.unwrap().consumed, input.len());
        assert_eq!(commands, vec![words(&["PING"])]);
    }

    #[test]
    fn nested_arrays_are_refused_without_recursion() {
        let input = b"*1\r\n".repeat(10_000);
        assert_eq!(parse_all(&input).0, Err(ProtocolError::ExpectedBulk('*')));
    }

    #[test]
    fn commands_before_a_malformed_one_are_kept() {
        let (result, commands) = parse_all(b"PING\r\n*1\r\n+OK\r\n");
        assert_eq!(result, Err(ProtocolError::ExpectedBulk('+')));
        assert_eq!(commands, vec![words(&["PING"])]);
    }

    #[test]
    fn a_half_arrived_value_resumes_where_it_stopped() {
        let full = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\n";
        let mut parser = RequestParser::default();
        let mut batch = Batch::new();
        let cut = full.len() - 6;
        let first = parser.parse(&full[..cut], &mut batch).unwrap();
        assert_eq!(first.consumed, 0);
        assert_eq!(first.need, 6);
        assert!(batch.is_empty());
        let second = parser.parse(full, &mut batch).unwrap();
        assert_eq!(second.consumed, full.len());
        assert_eq!(
            batch.command(full, 0).to_owned_vec(),
            words(&["SET", "key", "0123456789"])
        );
    }

    #[test]
    fn inline_commands_honour_quotes_and_escapes() {
        let (result, commands) = parse_all(b"set \"a b\" 'it\\'s' \"\\x41\\n\"\r\n  \r\nGET k\n");
        assert!(result.is_ok());
        assert_eq!(
            commands,
            vec![
                vec![
                    b"set".to_vec(),
                    b"a b".to_vec(),
                    b"it's".to_vec(),
                    b"A\n".to_vec()
                ],
                words(&["GET", "k"])
            ]
        );
        assert_eq!(
            parse_all(b"SET \"open\r\n").0,
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn oversized_inline_and_headers_are_refused() {
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(parse_all(&long).0, Err(ProtocolError::InlineTooBig));
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; 70 * 1024]);
        assert_eq!(
            parse_all(&header).0,
            Err(ProtocolError::MultibulkHeaderTooBig)
        );
    }

    #[test]
    fn integers_parse_exactly_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"-0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn encode(commands: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut out = Vec::new();
            for command in commands {
                out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
                for arg in command {
                    out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                    out.extend_from_slice(arg);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out
        }

        /// Parses `input` delivered in two reads split at `cut`, as a connection would.
        fn parse_in_two_reads(input: &[u8], cut: usize) -> Vec<Vec<Vec<u8>>> {
            let mut parser = RequestParser::default();
            let mut commands = Vec::new();
            let mut buffer = input[..cut].to_vec();
            let mut rest = &input[cut..];
            loop {
                let mut batch = Batch::new();
                let parsed = parser.parse(&buffer, &mut batch).expect("valid input");
                commands.extend((0..batch.len()).map(|i| batch.command(&buffer, i).to_owned_vec()));
                buffer.drain(..parsed.consumed);
                if rest.is_empty() {
                    break;
                }
                buffer.extend_from_slice(rest);
                rest = &[];
            }
            commands
        }

        fn command_strategy() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
            let arg = proptest::collection::vec(any::<u8>(), 0..40);
            let command = proptest::collection::vec(arg, 1..5);
            proptest::collection::vec(command, 1..6)
        }

        proptest! {
            #[test]
            fn any_bytes_never_panic_and_never_over_consume(input in proptest::collection::vec(any::<u8>(), 0..600)) {
                let mut parser = RequestParser::default();
                let mut batch = Batch::new();
                if let Ok(parsed) = parser.parse(&input, &mut batch) {
                    prop_assert!(parsed.consumed <= input.len());
                }
                for i in 0..batch.len() {
                    prop_assert!(!batch.command(&input, i).is_empty());
                }
            }

            #[test]
            fn resp_headers_with_junk_never_panic(counts in proptest::collection::vec((any::<bool>(), -3i64..40, proptest::collection::vec(any::<u8>(), 0..12)), 0..20)) {
                let mut input = Vec::new();
                for (array, n, junk) in counts {
                    input.extend_from_slice(format!("{}{n}\r\n", if array { '*' } else { '$' }).as_bytes());
                    input.extend_from_slice(&junk);
                }
                let mut parser = RequestParser::default();
                let mut batch = Batch::new();
                let _ = parser.parse(&input, &mut batch);
            }

            #[test]
            fn commands_parse_back_exactly_whatever_the_read_boundaries(commands in command_strategy(), cut_seed in any::<usize>()) {
                let input = encode(&commands);
                let cut = cut_seed % (input.len() + 1);
                prop_assert_eq!(parse_in_two_reads(&input, cut), commands.clone());
                // The general-purpose decoder agrees on every frame.
                let mut offset = 0;
                for command in &commands {
                    let (frame, used) = redis_protocol::resp2::decode::decode(&input[offset..]).unwrap().unwrap();
                    let redis_protocol::resp2::types::OwnedFrame::Array(items) = frame else { panic!("not an array") };
                    let args: Vec<Vec<u8>> = items.into_iter().map(|f| match f {
                        redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                        other => panic!("unexpected {other:?}"),
                    }).collect();
                    prop_assert_eq!(&args, command);
                    offset += used;
                }
                prop_assert_eq!(offset, input.len());
            }
        }
    }
}
