//! Bytes and durations as text: the one place for units. Two renderings, each a stable
//! interface of its own: the long one for text reports (`inspect`, `replay`), the compact
//! one for the TUI's narrow columns (its golden screens pin it).

const BINARY_LONG: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
const BINARY_SHORT: [&str; 5] = ["K", "M", "G", "T", "P"];

/// `b` in the largest binary unit that keeps it at 1 or more: (value, unit index).
fn binary(b: u64) -> (f64, usize) {
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < BINARY_LONG.len() {
        v /= 1024.0;
        unit += 1;
    }
    (v, unit)
}

/// Bytes, long: `1023 B`, `4.0 KiB`, `2.0 MiB`.
pub fn bytes_long(b: u64) -> String {
    if b < 1024 {
        return format!("{b} B");
    }
    let (v, unit) = binary(b);
    format!("{v:.1} {}", BINARY_LONG[unit])
}

/// Bytes, compact: `512B`, `4.0K`, `13.1M`, `256M`.
pub fn bytes_compact(b: u64) -> String {
    if b < 1024 {
        return format!("{b}B");
    }
    let (v, unit) = binary(b);
    if v >= 100.0 {
        format!("{v:.0}{}", BINARY_SHORT[unit])
    } else {
        format!("{v:.1}{}", BINARY_SHORT[unit])
    }
}

/// A duration, long: `850ns`, `12.3us`, `4.56ms`, `1.234s`.
pub fn duration_long(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// A duration, compact: `850ns`, `12.3µs`, `1.04ms`, `4.6s`, `3m12s`, `2h03m`.
pub fn duration_compact(ns: u64) -> String {
    // One decimal below 100, none above: 12.3ms, 250ms.
    let short = |v: f64, unit: &str| {
        if v >= 99.95 {
            format!("{v:.0}{unit}")
        } else {
            format!("{v:.1}{unit}")
        }
    };
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        short(ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        short(ns as f64 / 1e6, "ms")
    } else if ns < 60_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if ns < 3_600_000_000_000 {
        let s = ns / 1_000_000_000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = ns / 60_000_000_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// Seconds with milliseconds: `4.601s`.
pub fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_renderings() {
        assert_eq!(bytes_long(1023), "1023 B");
        assert_eq!(bytes_long(4095), "4.0 KiB");
        assert_eq!(bytes_long(2 << 20), "2.0 MiB");
        assert_eq!(bytes_long(u64::MAX), "16384.0 PiB");
        assert_eq!(bytes_compact(512), "512B");
        assert_eq!(bytes_compact(4096), "4.0K");
        assert_eq!(bytes_compact(256 << 20), "256M");
        assert_eq!(duration_long(12_345), "12.3us");
        assert_eq!(duration_long(4_560_000), "4.56ms");
        assert_eq!(duration_compact(12_345), "12.3µs");
        assert_eq!(duration_compact(250_000_000), "250ms");
        assert_eq!(duration_compact(192_000_000_000), "3m12s");
        assert_eq!(duration_compact(7_380_000_000_000), "2h03m");
        assert_eq!(seconds(4_601_000_000), "4.601s");
    }
}
