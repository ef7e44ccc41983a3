//! Invariants of the monitor, history and settings for any input sequence (proptest).

use bms_core::history::{History, HistoryInput};
use bms_core::monitor::{Monitor, MonitorInput, SocState};
use bms_core::settings::{Settings, SettingsField};
use proptest::prelude::*;

/// Time steps: mostly ticks, sometimes huge jumps or steps backwards.
fn time_step() -> impl Strategy<Value = i128> {
    prop_oneof![
        8 => 0i128..=1_000,
        1 => 0i128..=100_000_000,
        1 => -1_000_000i128..=0,
        1 => Just(i128::from(u64::MAX)),
    ]
}

fn current_ma() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => -300_000i32..=300_000,
        1 => any::<i32>(),
        1 => prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0)],
    ]
}

fn monitor_input() -> impl Strategy<Value = MonitorInput> {
    (
        prop_oneof![3 => 10_000u32..=60_000, 1 => any::<u32>()],
        current_ma(),
        prop_oneof![3 => Just(100_000u32), 1 => any::<u32>(), 1 => Just(0u32)],
        prop_oneof![3 => Just(4u16), 1 => any::<u16>()],
    )
        .prop_map(
            |(bank_mv, bank_ma, capacity_mah, cells_in_series)| MonitorInput {
                bank_mv,
                bank_ma,
                capacity_mah,
                cells_in_series,
            },
        )
}

/// Any settings, valid or not: the monitor must not panic on a bad value either.
fn any_settings() -> impl Strategy<Value = Settings> {
    prop_oneof![
        3 => Just(Settings::default()),
        1 => (any::<u16>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(a, b, c, d, e, f)| Settings {
                charged_cell_mv: a,
                tail_current_permille: b,
                charged_detection_min: c,
                low_soc_warning_pct: d,
                discharge_floor_pct: e,
                prealarm_cell_mv: f,
            }),
    ]
}

#[derive(Clone, Debug)]
enum Action {
    Update(i128, MonitorInput, Settings),
    SetSoc(u16),
    Synchronise,
    Persisted,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        20 => (time_step(), monitor_input(), any_settings())
            .prop_map(|(dt, input, settings)| Action::Update(dt, input, settings)),
        1 => any::<u16>().prop_map(Action::SetSoc),
        1 => Just(Action::Synchronise),
        1 => Just(Action::Persisted),
    ]
}

fn restored() -> impl Strategy<Value = Option<SocState>> {
    prop_oneof![
        1 => Just(None),
        1 => (any::<u32>(), any::<i64>(), any::<i64>(), any::<bool>(), any::<bool>(), any::<Option<u64>>())
            .prop_map(|(capacity_mah, used_nas, consumed_nas, low, floor, since)| Some(SocState {
                knowledge: bms_core::monitor::SocKnowledge::Known,
                capacity_mah,
                used_nas,
                consumed_nas,
                since_full_charge_ms: since,
                low_soc_warning: low,
                below_floor: floor,
            })),
    ]
}

fn advance(now_ms: u64, dt: i128) -> u64 {
    u64::try_from((i128::from(now_ms) + dt).clamp(0, i128::from(u64::MAX))).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// MON-1, MON-7: SoC and its estimate stay within 0..=100 %, consumed Ah is never negative,
    /// and nothing panics, for any restored state, currents, times and settings.
    #[test]
    fn mon_1_soc_stays_in_range(restored in restored(), actions in prop::collection::vec(action(), 1..200)) {
        let mut monitor = Monitor::new(restored);
        let mut now_ms = 0u64;
        for action in actions {
            match action {
                Action::Update(dt, input, settings) => {
                    now_ms = advance(now_ms, dt);
                    let status = monitor.update(now_ms, &input, &settings);
                    prop_assert!(status.soc_permille.is_none_or(|soc| soc <= 1000));
                    prop_assert!(status.soc_estimate_permille.is_none_or(|soc| soc <= 1000));
                    prop_assert!(status.soc_permille.is_none() || status.soc_estimate_permille.is_none());
                    if status.soc_permille.is_none() {
                        prop_assert!(!status.below_floor && !status.low_soc_warning && status.ttg_min.is_none());
                    }
                    let state = monitor.snapshot();
                    prop_assert!(state.used_nas >= 0 && state.consumed_nas >= 0);
                }
                Action::SetSoc(soc) => {
                    let result = monitor.set_soc(now_ms, soc);
                    prop_assert_eq!(result.is_ok(), soc <= 1000 && monitor.capacity_mah() > 0);
                    if result.is_ok() {
                        prop_assert_eq!(monitor.soc_permille(), Some(soc));
                    }
                }
                Action::Synchronise => {
                    if monitor.synchronise(now_ms).is_ok() {
                        prop_assert_eq!(monitor.soc_permille(), Some(1000));
                        prop_assert_eq!(monitor.consumed_mah(), 0);
                    }
                }
                Action::Persisted => {
                    monitor.mark_persisted();
                    prop_assert!(!monitor.persist_due(now_ms));
                }
            }
        }
    }

    /// HIST-4: no history item goes backwards except by reset, and nothing panics.
    #[test]
    fn hist_4_history_never_goes_backwards(
        steps in prop::collection::vec((
            time_step(),
            any::<u32>(),
            current_ma(),
            any::<Option<u16>>(),
            any::<Option<i16>>(),
            any::<Option<u16>>(),
            any::<u32>(),
            any::<bool>(),
            prop::option::of(any::<u16>()),
        ), 1..200)
    ) {
        let mut history = History::default();
        let mut now_ms = 0u64;
        for (dt, bank_mv, bank_ma, cell_mv, temp, soc, consumed_mah, synchronised, error) in steps {
            let before = history.clone();
            now_ms = advance(now_ms, dt);
            let input = HistoryInput {
                bank_mv,
                bank_ma,
                min_cell_mv: cell_mv,
                max_cell_mv: cell_mv,
                min_temp_ddegc: temp,
                max_temp_ddegc: temp,
                soc_permille: soc,
                consumed_mah,
                synchronised,
            };
            let status = history.update(now_ms, &input);
            if let Some(code) = error {
                history.record_error(code);
            }
            let h = &history;
            prop_assert!(h.deepest_discharge_mah() >= before.deepest_discharge_mah());
            prop_assert!(h.cumulative_drawn_mah() >= before.cumulative_drawn_mah());
            prop_assert!(h.discharged_energy_mwh() >= before.discharged_energy_mwh());
            prop_assert!(h.charged_energy_mwh() >= before.charged_energy_mwh());
            prop_assert!(h.synchronisations() >= before.synchronisations());
            prop_assert!(h.cycles() >= before.cycles());
            prop_assert_eq!(
                status.counted_changed,
                (h.synchronisations(), h.cycles()) != (before.synchronisations(), before.cycles())
            );
            let widened = |old: Option<i64>, new: Option<i64>, lower: bool| match (old, new) {
                (Some(o), Some(n)) => if lower { n <= o } else { n >= o },
                (Some(_), None) => false,
                (None, _) => true,
            };
            prop_assert!(widened(before.min_bank_mv().map(i64::from), h.min_bank_mv().map(i64::from), true));
            prop_assert!(widened(before.max_bank_mv().map(i64::from), h.max_bank_mv().map(i64::from), false));
            prop_assert!(widened(before.min_cell_mv().map(i64::from), h.min_cell_mv().map(i64::from), true));
            prop_assert!(widened(before.max_cell_mv().map(i64::from), h.max_cell_mv().map(i64::from), false));
            prop_assert!(widened(before.min_temp_ddegc().map(i64::from), h.min_temp_ddegc().map(i64::from), true));
            prop_assert!(widened(before.max_temp_ddegc().map(i64::from), h.max_temp_ddegc().map(i64::from), false));
        }
    }

    /// SET-1: validation accepts exactly the settings within every range and the cross-rule,
    /// and a refused write changes nothing.
    #[test]
    fn set_1_validation_matches_the_rules(a: u16, b: u16, c: u8, d: u8, e: u8, f: u16) {
        let candidate = Settings {
            charged_cell_mv: a,
            tail_current_permille: b,
            charged_detection_min: c,
            low_soc_warning_pct: d,
            discharge_floor_pct: e,
            prealarm_cell_mv: f,
        };
        let in_range = SettingsField::ALL
            .iter()
            .all(|field| field.bounds().contains(candidate.get(*field)));
        let cross_ok = d == 0 || e == 0 || d > e;
        let mut settings = Settings::default();
        let result = settings.write(candidate);
        prop_assert_eq!(result.is_ok(), in_range && cross_ok);
        prop_assert_eq!(settings, if result.is_ok() { candidate } else { Settings::default() });
    }
}
