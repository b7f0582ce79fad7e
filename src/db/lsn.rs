//! Postgres WAL positions (`pg_lsn`), compared as the 64-bit byte offsets they are.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log, written by Postgres as `hi/lo` in hex (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN: {s:?}"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|e| format!("{s:?}: {e}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|e| format!("{s:?}: {e}"))?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(format!("not an LSN: {s:?}"));
        }
        Ok(Self((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_orders_and_prints_like_postgres() {
        let a: Lsn = "16/B374D848".parse().expect("valid");
        let b: Lsn = "17/0".parse().expect("valid");
        assert!(a < b);
        assert_eq!(a.to_string(), "16/B374D848");
        assert_eq!(b.0 - a.0, 0x1_0000_0000 - 0xB374_D848);
        assert!("nope".parse::<Lsn>().is_err());
    }
}
