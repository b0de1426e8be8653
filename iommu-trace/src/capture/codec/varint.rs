//! Primitive encoding: LEB128 varints, zigzag signed values and deltas, strings, and the
//! `Dec` reader that takes them apart again.

pub(super) fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(super) fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, zigzag(v));
}

/// A signed difference, exact for any two u64 values.
pub(super) fn put_delta(out: &mut Vec<u8>, v: u64, from: u64) {
    put_i(out, v.wrapping_sub(from) as i64);
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a record payload; every error is a message for the reader's warning.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

pub(super) type DResult<T> = Result<T, String>;

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }

    pub(super) fn byte(&mut self) -> DResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| "record ends early".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn u64(&mut self) -> DResult<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = (b & 0x7f) as u64;
            if i == 9 && bits > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    pub(super) fn u32(&mut self) -> DResult<u32> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| format!("value {v} does not fit 32 bits"))
    }

    pub(super) fn i64(&mut self) -> DResult<i64> {
        self.u64().map(unzigzag)
    }

    pub(super) fn i32(&mut self) -> DResult<i32> {
        let v = self.i64()?;
        i32::try_from(v).map_err(|_| format!("value {v} does not fit 32 bits"))
    }

    pub(super) fn delta(&mut self, from: u64) -> DResult<u64> {
        Ok(from.wrapping_add(self.i64()? as u64))
    }

    pub(super) fn bytes(&mut self, n: usize) -> DResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("a {n}-byte field runs past the end of its frame"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn string(&mut self) -> DResult<String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "string length overflows".to_string())?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_u(&mut out, v);
            assert_eq!(Dec::new(&out).u64().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_i(&mut out, v);
            assert_eq!(Dec::new(&out).i64().unwrap(), v);
        }
        assert!(Dec::new(&[0xff; 11]).u64().is_err());
        assert!(
            Dec::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .u64()
                .is_err()
        );
    }
}
