//! Text for a terminal: strings that came from the kernel or from a file (a task's `comm`,
//! which any process can set to 15 bytes of its choice, driver and symbol names, header
//! fields) with control characters escaped visibly, so that they cannot move the cursor,
//! retitle the terminal or forge lines.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as an escape (`\u{1b}`, `\n`).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// [`printable`] for text of several lines: newlines kept, every other control character
/// escaped.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.split('\n').map(printable).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_the_rest_kept() {
        assert!(matches!(printable("qemu-system-x86"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(printable("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(printable("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(printable("é µs"), "é µs");
        assert_eq!(printable_lines("a\x1b[2J\nb\tc\n"), "a\\u{1b}[2J\nb\\tc\n");
    }
}
