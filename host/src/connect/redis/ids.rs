//! Entry ids as positions: an id `ms-seq` packs into a `u64` that sorts as
//! the ids do, and an id that does not fit gets a stand-in position for the
//! whole process, which the renderer writes back as the real id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sequence numbers take the low 20 bits of a position, milliseconds the
/// other 44.
pub(super) const SEQ_BITS: u32 = 20;

/// An entry id `ms-seq` as a position: `ms << 20 | seq`, so positions sort as
/// ids do. `None` for an id that is not of that form or does not fit (ms at
/// least 2^44, past the year 2500, or seq at least 2^20): Redis makes no
/// such id itself, but `XADD` with an explicit id can.
pub(super) fn pack(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << (64 - SEQ_BITS) && seq < 1 << SEQ_BITS).then_some(ms << SEQ_BITS | seq)
}

/// A position written back as the entry id it packs, or the real id of an
/// entry that was given a stand-in.
pub(super) fn render(position: u64) -> String {
    if let Some(id) = stand_ins().get(&position) {
        return id.clone();
    }
    format!("{}-{}", position >> SEQ_BITS, position & ((1 << SEQ_BITS) - 1))
}

/// Entries whose ids do not fit a position get a stand-in, counted down from
/// the top for the whole process (so that two sources never share one), and
/// this map names their real ids for dead letters: [`Locator`]'s renderer is
/// a plain `fn`, which cannot hold a source's state. A stand-in is dropped
/// when its entry is done. (A real id at the very top, past the year 2500,
/// would read as a stand-in's: Redis makes no such id itself.)
static STAND_INS: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
static NEXT_STAND_IN: AtomicU64 = AtomicU64::new(u64::MAX);

pub(super) fn stand_ins() -> std::sync::MutexGuard<'static, BTreeMap<u64, String>> {
    STAND_INS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new stand-in position for the entry `id`.
pub(super) fn stand_in(id: &str) -> u64 {
    let position = NEXT_STAND_IN.fetch_sub(1, Ordering::Relaxed);
    stand_ins().insert(position, id.to_string());
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_pack_into_positions_and_back() {
        for id in ["0-0", "0-1", "1-0", "1700000000000-0", "1700000000000-3", "17592186044415-1048575"] {
            let position = pack(id).unwrap_or_else(|| panic!("{id} fits"));
            assert_eq!(render(position), id);
        }
        // Positions sort as the ids do.
        let ids = ["1-5", "2-0", "2-1", "1700000000000-0", "1700000000001-0"];
        let positions: Vec<u64> = ids.iter().map(|id| pack(id).unwrap()).collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }

    #[test]
    fn ids_that_do_not_fit_or_are_not_ids_pack_to_nothing() {
        // 2^44 milliseconds, a sequence of 2^20, the largest id Redis accepts, and non-ids.
        for id in ["17592186044416-0", "1-1048576", "18446744073709551615-18446744073709551615", "5", "a-b", "-1-0", ""]
        {
            assert_eq!(pack(id), None, "{id}");
        }
    }

    #[test]
    fn an_id_that_does_not_fit_is_written_as_itself_until_its_entry_is_done() {
        let (a, b) = (stand_in("99999999999999999-0"), stand_in("1-2000000"));
        assert_ne!(a, b);
        assert_eq!((render(a), render(b)), ("99999999999999999-0".to_string(), "1-2000000".to_string()));
        stand_ins().remove(&a);
        assert_ne!(render(a), "99999999999999999-0");
        assert_eq!(render(b), "1-2000000");
    }
}
