//! The balancer status of the bank (BAL): the batteries balance their own cells; the BMS only
//! judges and shows how well. Inputs per step: [`BalancerInput`] (SoC knowledge, time since the
//! last full charge, bank current, balancing flags, synchronisation and topology events).
//! Output: a [`BalancerState`].

use crate::limits::{BALANCED_SPREAD_MV, BALANCER_STALE_MS, CHARGING_MIN_MA};
use crate::word::Word;

/// BAL-1: what the balancer page shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum BalancerState {
    /// Not known (BAL-2): no full charge for more than 30 days, a battery was just added, or
    /// the SoC is unknown. A full charge cycle fixes it.
    #[default]
    Unknown = 0,
    /// The cell spread at the last full charge was at most 30 mV.
    Balanced = 1,
    /// The cell spread at the last full charge was larger than 30 mV.
    Imbalanced = 2,
    /// The bank is charging and some battery is balancing its cells.
    Balancing = 3,
}

impl BalancerState {
    /// Short lowercase name (logs, simulator CSV).
    pub const fn name(self) -> &'static str {
        match self {
            BalancerState::Unknown => "unknown",
            BalancerState::Balanced => "balanced",
            BalancerState::Imbalanced => "imbalanced",
            BalancerState::Balancing => "balancing",
        }
    }
}

/// What the balancer looks at in one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalancerInput {
    /// The SoC is known (MON-7).
    pub soc_known: bool,
    /// Time since the last full charge (automatic synchronisation), ms; `None` = never.
    pub since_full_charge_ms: Option<u64>,
    /// Bank current, mA, positive = charging; `None` while the bank data is not valid.
    pub bank_ma: Option<i32>,
    /// Some battery reports active balancing.
    pub any_balancing: bool,
    /// A full charge (automatic synchronisation, MON-2) happened in this step.
    pub synchronised: bool,
    /// The cell spread (max − min cell) now, mV; `None` while the bank data is not valid.
    pub cell_spread_mv: Option<u16>,
    /// BANK-5: a battery was added or removed in this step (a new battery joined, a lost one
    /// was forgotten, or the capacity the monitor counts with changed), even when the bank's
    /// capacity stayed the same (a battery in series, a battery swapped).
    pub capacity_changed: bool,
}

/// The balancer judgement, kept between full charges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balancer {
    /// Spread judged at the last full charge: `Some(true)` = balanced. Forgotten when a
    /// battery is added or removed.
    judged_balanced: Option<bool>,
    state: BalancerState,
}

impl Balancer {
    /// No judgement yet: Unknown.
    pub const fn new() -> Self {
        Balancer {
            judged_balanced: None,
            state: BalancerState::Unknown,
        }
    }

    /// The judgement restored from flash (stored with the SoC record): shown again once the
    /// bank is back, until a battery is added or removed.
    pub const fn restored(judged_balanced: Option<bool>) -> Self {
        Balancer {
            judged_balanced,
            state: BalancerState::Unknown,
        }
    }

    /// The judgement of the last full charge, to persist: `Some(true)` = balanced.
    pub fn judged_balanced(&self) -> Option<bool> {
        self.judged_balanced
    }

    /// One step; returns the state to show.
    pub fn update(&mut self, input: &BalancerInput) -> BalancerState {
        if input.capacity_changed {
            self.judged_balanced = None;
        }
        if input.synchronised {
            if let Some(spread) = input.cell_spread_mv {
                self.judged_balanced = Some(spread <= BALANCED_SPREAD_MV);
            }
        }
        let stale = input
            .since_full_charge_ms
            .is_none_or(|t| t > BALANCER_STALE_MS);
        let charging = input.bank_ma.is_some_and(|ma| ma > CHARGING_MIN_MA);
        let state = match self.judged_balanced {
            _ if stale || !input.soc_known => BalancerState::Unknown,
            None => BalancerState::Unknown,
            Some(_) if charging && input.any_balancing => BalancerState::Balancing,
            Some(true) => BalancerState::Balanced,
            Some(false) => BalancerState::Imbalanced,
        };
        if state != self.state {
            log::info!("balancer {}", Word(state.name()));
        }
        self.state = state;
        state
    }

    /// The state of the last step.
    pub fn state(&self) -> BalancerState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn full_charge(spread_mv: u16) -> BalancerInput {
        BalancerInput {
            soc_known: true,
            since_full_charge_ms: Some(0),
            bank_ma: Some(0),
            any_balancing: false,
            synchronised: true,
            cell_spread_mv: Some(spread_mv),
            capacity_changed: false,
        }
    }

    fn later(since_full_charge_ms: u64) -> BalancerInput {
        BalancerInput {
            synchronised: false,
            since_full_charge_ms: Some(since_full_charge_ms),
            ..full_charge(0)
        }
    }

    /// BAL-1: the four states exist with stable numbers (shown on the battery page).
    #[test]
    fn bal_1_states() {
        let states = [
            BalancerState::Unknown,
            BalancerState::Balanced,
            BalancerState::Imbalanced,
            BalancerState::Balancing,
        ];
        for (n, s) in states.into_iter().enumerate() {
            assert_eq!(s as usize, n);
        }
        assert_eq!(Balancer::new().state(), BalancerState::Unknown);
    }

    /// BAL-2: Unknown before any full charge, after 30 days without one, with SoC unknown,
    /// and when a battery was just added.
    #[test]
    fn bal_2_unknown_when_stale_new_battery_or_soc_unknown() {
        let mut b = Balancer::new();
        assert_eq!(b.update(&later(0)), BalancerState::Unknown, "never judged");
        assert_eq!(b.update(&full_charge(10)), BalancerState::Balanced);
        assert_eq!(b.update(&later(30 * DAY_MS)), BalancerState::Balanced);
        assert_eq!(
            b.update(&later(30 * DAY_MS + 1)),
            BalancerState::Unknown,
            "30 days"
        );
        let no_sync = BalancerInput {
            since_full_charge_ms: None,
            ..later(0)
        };
        assert_eq!(
            b.update(&no_sync),
            BalancerState::Unknown,
            "never synchronised"
        );
        assert_eq!(b.update(&later(DAY_MS)), BalancerState::Balanced);
        let soc_unknown = BalancerInput {
            soc_known: false,
            ..later(DAY_MS)
        };
        assert_eq!(
            b.update(&soc_unknown),
            BalancerState::Unknown,
            "soc unknown"
        );
        let added = BalancerInput {
            capacity_changed: true,
            ..later(DAY_MS)
        };
        assert_eq!(b.update(&added), BalancerState::Unknown, "battery added");
        assert_eq!(
            b.update(&later(DAY_MS)),
            BalancerState::Unknown,
            "until the next full charge"
        );
        assert_eq!(b.update(&full_charge(30)), BalancerState::Balanced);
    }

    /// BAL-3: Balancing while charging with a battery balancing; otherwise the spread at the
    /// last full charge decides (≤ 30 mV Balanced, else Imbalanced).
    #[test]
    fn bal_3_balancing_while_charging_else_spread_at_full_charge() {
        let mut b = Balancer::new();
        assert_eq!(b.update(&full_charge(31)), BalancerState::Imbalanced);
        // The spread now does not matter: only the one at the last full charge.
        let now_tight = BalancerInput {
            cell_spread_mv: Some(5),
            ..later(1000)
        };
        assert_eq!(b.update(&now_tight), BalancerState::Imbalanced);
        let charging = BalancerInput {
            bank_ma: Some(5000),
            any_balancing: true,
            ..later(2000)
        };
        assert_eq!(b.update(&charging), BalancerState::Balancing);
        let discharging = BalancerInput {
            bank_ma: Some(-5000),
            ..charging
        };
        assert_eq!(b.update(&discharging), BalancerState::Imbalanced);
        let not_balancing = BalancerInput {
            any_balancing: false,
            ..charging
        };
        assert_eq!(b.update(&not_balancing), BalancerState::Imbalanced);
        assert_eq!(b.update(&full_charge(30)), BalancerState::Balanced);
    }
}
