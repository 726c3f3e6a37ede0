//! Glob-style pattern matching exactly as Redis's `stringmatchlen` (KEYS, SCAN MATCH,
//! CONFIG GET): `*`, `?`, `[abc]`, `[^a-z]`, and `\` escapes. Iterative, so a hostile
//! pattern cannot exhaust the stack.

/// True when `text` matches `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index it covers to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let matched = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => match_class(pattern, p, text[t], nocase),
                b'\\' if p + 1 < pattern.len() => eq(pattern[p + 1], text[t]).then_some(p + 2),
                c => eq(c, text[t]).then_some(p + 1),
            }
        } else {
            None
        };
        match matched {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match star {
                Some((star_p, star_t)) => {
                    p = star_p;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` class at `pattern[start]`; the index after the class when it matches.
fn match_class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<usize> {
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let c = fold(c);
    let mut p = start + 1;
    let negate = p < pattern.len() && pattern[p] == b'^';
    if negate {
        p += 1;
    }
    let mut found = false;
    loop {
        if p >= pattern.len() {
            // Redis treats an unterminated class as ending at the pattern's end.
            p = pattern.len() - 1;
            break;
        }
        match pattern[p] {
            b']' => break,
            b'\\' if p + 1 < pattern.len() => {
                p += 1;
                found |= fold(pattern[p]) == c;
            }
            lo if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' => {
                let (mut a, mut b) = (fold(lo), fold(pattern[p + 2]));
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                found |= (a..=b).contains(&c);
                p += 2;
            }
            other => found |= fold(other) == c,
        }
        p += 1;
    }
    (found != negate).then_some(p + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn matches_like_redis() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes(), false);
        assert!(m("*", ""));
        assert!(m("h?llo", "hello"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:age"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*a*a*b", "aaaaaaaaab"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaa"));
        assert!(glob_match(b"HELLO", b"hello", true));
    }

    #[test]
    fn hostile_patterns_finish() {
        let pattern = "*a".repeat(500);
        assert!(!glob_match(pattern.as_bytes(), &[b'a'; 400], false));
    }
}
