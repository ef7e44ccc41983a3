//! A simulated week of a solar installation with the real monitor, history, settings and
//! advertiser persisting through [`Persistence`], killed and restored at random instants
//! (between steps and in the middle of a poll), for many seeds.

use std::collections::VecDeque;

use super::hist::{DRAWN_UNIT_MAH, ENERGY_UNIT_MWH};
use super::persist::tests::{assert_near, FaultyStorage};
use super::*;
use crate::history::{History, HistoryInput, HistoryRecord};
use crate::monitor::{Monitor, MonitorInput, SocState};
use crate::name::DeviceName;
use crate::readout::{Advertiser, ReadoutError, ReadoutValues, PAYLOAD_LEN};
use crate::secrets::DeviceSecrets;
use crate::settings::Settings;

const STEP_MS: u64 = 10_000;
const DAY_MS: u64 = 86_400_000;
const CAPACITY_MAH: u32 = 200_000;
const CELLS: u16 = 4;
const KEY: [u8; 16] = [7; 16];
/// MON-8: the history is persisted at least every 10 minutes while it changes.
const MON_8_MS: u64 = 10 * 60_000;

/// xorshift64*: a small deterministic generator, so every seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability 1 / `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Bank current (mA) and voltage (mV) at `t_ms` of the week for a bank at `soc_permille`:
/// loads at night, a solar bell during the day, absorption at the tail current when full.
fn plant(t_ms: u64, soc_permille: u16, rng: &mut Rng) -> (i32, u32) {
    let hour_ms = (t_ms % DAY_MS) as i64;
    let noise = rng.below(2_000) as i32 - 1_000;
    let day = 7 * 3_600_000..17 * 3_600_000;
    if day.contains(&hour_ms) {
        if soc_permille >= 990 {
            return (3_000 + noise / 4, 14_200);
        }
        let x = (hour_ms - day.start) as f32 / (day.end - day.start) as f32;
        let sun_ma = (45_000.0 * libm_sin(core::f32::consts::PI * x)) as i32;
        (sun_ma - 4_000 + noise, 13_500)
    } else if hour_ms < day.start {
        (-6_000 + noise, 13_100)
    } else {
        (-10_000 + noise, 13_050)
    }
}

fn libm_sin(x: f32) -> f32 {
    f64::from(x).sin() as f32
}

/// Counted history items: never lost once written (HIST-4).
fn counted(record: &HistoryRecord) -> (u32, u32, [Option<u16>; 4]) {
    let history = History::from(*record);
    (
        history.cycles(),
        history.synchronisations(),
        history.last_errors(),
    )
}

/// The cumulative history counters (HIST-1): drawn mAh, discharged and charged mWh.
fn cumulative(record: &HistoryRecord) -> [u64; 3] {
    let history = History::from(*record);
    [
        history.cumulative_drawn_mah(),
        history.discharged_energy_mwh(),
        history.charged_energy_mwh(),
    ]
}

/// What a point may round off each cumulative counter (less than one unit).
const CUMULATIVE_UNITS: [u64; 3] = [DRAWN_UNIT_MAH, ENERGY_UNIT_MWH, ENERGY_UNIT_MWH];

fn soc_of(state: &SocState) -> Option<u16> {
    Monitor::new(Some(*state)).soc_permille()
}

/// The device between two reboots.
struct Device {
    monitor: Monitor,
    history: History,
    settings: Settings,
    advertiser: Advertiser,
    secrets: DeviceSecrets,
    persistence: Persistence,
    boot_ms: u64,
}

impl Device {
    fn boot(storage: &mut FaultyStorage, fallback_nonce: u16) -> (Device, Restored) {
        let (persistence, restored) = Persistence::restore(storage);
        let device = Device {
            monitor: Monitor::new(restored.soc.ok()),
            history: restored.history.map(History::from).unwrap_or_default(),
            settings: restored.settings_or_default(),
            advertiser: Advertiser::new(KEY, 0xA3EC, restored.first_nonce(fallback_nonce)),
            secrets: restored.secrets.unwrap_or(DeviceSecrets {
                passkey: DeviceSecrets::DEFAULT_PASSKEY,
                adv_key: KEY,
                read_protection: false,
                failed_pairings: 0,
                key_first_nonce: None,
            }),
            persistence,
            boot_ms: 0,
        };
        (device, restored)
    }
}

/// What the store holds according to the poll reports.
#[derive(Default)]
struct Written {
    settings: Option<Settings>,
    /// The state last written as a whole record.
    soc_record: Option<SocState>,
    /// The state last written through either record (its charge counts are the latest).
    soc: Option<SocState>,
    history: Option<HistoryRecord>,
    /// The history whose counted items were last stored.
    history_counted: Option<HistoryRecord>,
    secrets: Option<DeviceSecrets>,
}

impl Written {
    /// The SoC state a restore must give: the last whole record with the latest counts.
    fn expected_soc(&self) -> Option<SocState> {
        let (record, latest) = (self.soc_record?, self.soc?);
        Some(SocState {
            used_nas: latest.used_nas,
            consumed_nas: latest.consumed_nas,
            ..record
        })
    }
}

/// A store that accepts `writes_left` more writes, then loses power (fails every write).
struct DyingStorage<'a> {
    inner: &'a mut FaultyStorage,
    writes_left: u64,
}

impl Storage for DyingStorage<'_> {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        self.inner.read(key, buf)
    }
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        if self.writes_left == 0 {
            return Err(StorageError::Io { code: -5 });
        }
        self.writes_left -= 1;
        self.inner.write(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
}

struct WeekResult {
    reboots: u32,
    /// Worst SoC lost by a reboot between two steps (a cut inside a poll may also lose that
    /// step's change, checked on its own).
    max_soc_loss_permille: u16,
    cycles: u32,
    synchronisations: u32,
}

fn run_week(seed: u64) -> WeekResult {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut store = FaultyStorage::default();
    let (mut dev, restored) = Device::boot(&mut store, 0);
    assert!(restored.first_boot());
    let mut written = Written::default();
    let mut ever_counted = (0u32, 0u32);
    let mut result = WeekResult {
        reboots: 0,
        max_soc_loss_permille: 0,
        cycles: 0,
        synchronisations: 0,
    };
    let mut payload = [0u8; PAYLOAD_LEN];
    let mut last_sent: Option<u16> = None;
    // The cumulative counters at each step of the last 10 minutes and more, oldest first.
    let mut recent: VecDeque<(u64, [u64; 3])> = VecDeque::new();
    let mut ever_cumulative = [0u64; 3];
    let mut t_ms = 0u64;
    while t_ms < 7 * DAY_MS {
        t_ms += STEP_MS;
        dev.boot_ms += STEP_MS;
        let now = dev.boot_ms;
        let soc_before = dev.monitor.soc_permille();
        let (bank_ma, bank_mv) = plant(t_ms, soc_before.unwrap_or(500), &mut rng);
        let input = MonitorInput {
            bank_mv,
            bank_ma,
            capacity_mah: CAPACITY_MAH,
            cells_in_series: CELLS,
        };
        let status = dev.monitor.update(now, &input, &dev.settings);
        if dev.monitor.soc_permille().is_none() {
            dev.monitor.set_soc(dev.boot_ms, 500).unwrap();
        }
        let _ = dev.history.update(
            now,
            &HistoryInput {
                bank_mv,
                bank_ma,
                min_cell_mv: Some((bank_mv / 4) as u16 - 5),
                max_cell_mv: Some((bank_mv / 4) as u16 + 5),
                min_temp_ddegc: Some(200),
                max_temp_ddegc: Some(250),
                soc_permille: status.soc_permille,
                consumed_mah: status.consumed_mah,
                synchronised: status.synchronised,
            },
        );
        if rng.one_in(2_000) {
            dev.history.record_error(1 + rng.below(5) as u16);
        }
        recent.push_back((t_ms, cumulative(dev.history.record())));
        while recent
            .get(1)
            .is_some_and(|&(at, _)| at + MON_8_MS + 3 * STEP_MS <= t_ms)
        {
            recent.pop_front();
        }
        if rng.one_in(3_000) {
            let new = Settings {
                charged_detection_min: 1 + rng.below(5) as u8,
                low_soc_warning_pct: 20 + rng.below(10) as u8,
                ..dev.settings
            };
            dev.settings.write(new).unwrap();
        }
        if rng.one_in(4_000) {
            dev.secrets.passkey = rng.below(1_000_000) as u32;
        }
        let values = ReadoutValues {
            soc_permille: dev.monitor.soc_permille(),
            bank_mv: Some(bank_mv),
            current_ma: Some(bank_ma),
            ..ReadoutValues::NOT_AVAILABLE
        };
        // Before the first reservation of a boot is written there is nothing to send.
        match dev.advertiser.payload(&values, &mut payload) {
            Ok(_) => last_sent = Some(dev.advertiser.nonce()),
            Err(ReadoutError::NotReserved) => {}
            Err(e) => panic!("seed {seed}: {e}"),
        }

        let records = Records {
            settings: dev.settings,
            soc: dev.monitor.snapshot(),
            soc_due: dev.monitor.persist_due(now),
            balanced_at_full: None,
            undervoltage_disconnect: false,
            history: *dev.history.record(),
            history_due: dev.history.all_due(now),
            history_counted_due: dev.history.counted_due(),
            nonce: dev.advertiser.nonce_to_persist(),
            secrets: Some(dev.secrets),
            learned: dev.monitor.learned(),
            flush: false,
            hold_older_formats: false,
            name: DeviceName::default(),
        };
        let kill = rng.one_in(300);
        let mid_poll = kill && rng.one_in(2);
        let report = if mid_poll {
            let writes_left = rng.below(4);
            let mut dying = DyingStorage {
                inner: &mut store,
                writes_left,
            };
            dev.persistence.poll(&mut dying, now, &records)
        } else {
            dev.persistence.poll(&mut store, now, &records)
        };
        if report.soc == Outcome::Written {
            dev.monitor.mark_persisted();
            written.soc = Some(records.soc);
        }
        if report.soc_record == Outcome::Written {
            written.soc_record = Some(records.soc);
        }
        if report.history == Outcome::Written {
            dev.history.mark_persisted(now);
            written.history = Some(records.history);
            written.history_counted = Some(records.history);
        } else if report.history_counted == Outcome::Written {
            dev.history.mark_counted_persisted();
            written.history_counted = Some(records.history);
        }
        if report.settings == Outcome::Written {
            written.settings = Some(records.settings);
        }
        if report.secrets == Outcome::Written {
            written.secrets = records.secrets;
        }
        if let (Outcome::Written, Some(value)) = (report.nonce, records.nonce) {
            dev.advertiser.nonce_persisted(value);
        }
        if !mid_poll {
            assert!(!report.any_failed(), "seed {seed}: write failed at {t_ms}");
        }
        if !kill {
            continue;
        }

        // Power cut now: what the device knew, then a fresh boot from the store.
        let actual_soc = dev.monitor.soc_permille();
        let actual_settings = dev.settings;
        let actual_secrets = dev.secrets;
        let actual_counted = counted(dev.history.record());
        let actual_cumulative = cumulative(dev.history.record());
        let (rebooted, restored) = Device::boot(&mut store, rng.next() as u16);
        result.reboots += 1;
        for kind in RecordKind::ALL {
            assert_eq!(restored.fault(kind), None, "seed {seed}: {kind} at {t_ms}");
        }
        // SET-2: every written setting survives; after a completed poll, the settings in use.
        assert_eq!(restored.settings.ok(), written.settings, "seed {seed}");
        if !mid_poll {
            assert_eq!(restored.settings, Ok(actual_settings), "seed {seed}");
        }
        // BLE-2: a changed passkey, once written, survives.
        assert_eq!(restored.secrets.ok(), written.secrets, "seed {seed}");
        if !mid_poll {
            assert_eq!(restored.secrets, Ok(actual_secrets), "seed {seed}");
        }
        // MON-8: the SoC restored is the one written (the last whole record with the charge
        // counts of the last point), at most 1 point from the SoC at the cut (plus this step's
        // change when the cut hit the very write that was due).
        let expected = written.expected_soc().unwrap();
        assert_near(&restored.soc.unwrap(), &expected);
        assert_eq!(
            restored.soc.unwrap().since_full_charge_ms,
            expected.since_full_charge_ms,
            "seed {seed}"
        );
        let restored_soc = soc_of(&restored.soc.unwrap());
        let loss = actual_soc.unwrap().abs_diff(restored_soc.unwrap());
        let step_change = soc_before.map_or(0, |before| before.abs_diff(actual_soc.unwrap()));
        let allowed = if mid_poll { 10 + step_change } else { 10 };
        assert!(
            loss <= allowed,
            "seed {seed}: lost {loss} permille at {t_ms}"
        );
        if !mid_poll {
            result.max_soc_loss_permille = result.max_soc_loss_permille.max(loss);
        }
        // HIST-4: a counted item once written is never lost, and counters never go backwards.
        let restored_history = restored.history.unwrap();
        assert_eq!(
            Some(counted(&restored_history)),
            written.history_counted.as_ref().map(counted),
            "seed {seed}"
        );
        // MON-8, HIST-4: the cumulative counters restored are at most what they were at the
        // cut, at least what they were 10 minutes (and the step or two a write may lag) before
        // it and what was last stored, less one point unit, and never below an earlier
        // reboot's.
        let restored_cumulative = cumulative(&restored_history);
        let lag_ms = MON_8_MS + if mid_poll { 2 * STEP_MS } else { STEP_MS };
        let before_lag = recent
            .iter()
            .rev()
            .find(|&&(at, _)| at + lag_ms <= t_ms)
            .map_or([0; 3], |&(_, values)| values);
        let last_stored = written.history.as_ref().map_or([0; 3], cumulative);
        for i in 0..3 {
            let got = restored_cumulative[i];
            assert!(
                got <= actual_cumulative[i],
                "seed {seed}: counter {i} invented"
            );
            assert!(
                got + CUMULATIVE_UNITS[i] > before_lag[i],
                "seed {seed}: counter {i} lost {} since 10 minutes before the cut at {t_ms}",
                before_lag[i] - got
            );
            assert!(
                got + CUMULATIVE_UNITS[i] > last_stored[i],
                "seed {seed}: counter {i} below what was stored"
            );
            assert!(
                got >= ever_cumulative[i],
                "seed {seed}: counter {i} went backwards"
            );
            ever_cumulative[i] = got;
        }
        // The device goes on from what was restored: that is now what is stored, and the
        // counters before the cut are those of another run.
        written.history = Some(restored_history);
        recent.clear();
        recent.push_back((t_ms, restored_cumulative));
        let restored_counted = counted(&restored_history);
        if !mid_poll {
            assert_eq!(restored_counted, actual_counted, "seed {seed} at {t_ms}");
        }
        assert!(restored_counted.0 >= ever_counted.0 && restored_counted.1 >= ever_counted.1);
        ever_counted = (restored_counted.0, restored_counted.1);
        // BLE-3 nonce: the first nonce after the reboot is ahead of every nonce sent (by at
        // most one block per boot that sent nothing).
        if let Some(last_sent) = last_sent {
            let first = restored.first_nonce(0);
            let ahead = first.wrapping_sub(last_sent);
            assert!(
                (1..0x8000).contains(&ahead),
                "seed {seed}: nonce {first} not ahead of {last_sent}"
            );
        }
        dev = rebooted;
    }
    result.cycles = dev.history.cycles();
    result.synchronisations = dev.history.synchronisations();
    result
}

/// MON-8: SoC, consumed Ah and history survive a reboot: killed and restored at random instants
/// of a simulated week (many seeds), a reboot loses at most the SoC change since the last write
/// (1 point) and never a setting (SET-2) or a counted history item (HIST-4) that was written;
/// the next Instant Readout nonce is always ahead of every nonce sent.
#[test]
fn mon_8_hist_4_set_2_reboot_at_random_instants_of_a_week_loses_at_most_one_point() {
    let mut reboots = 0;
    let mut worst = 0;
    for seed in 1..=6 {
        let result = run_week(seed);
        // The week exercises the counted items: a cycle and a synchronisation most days.
        assert!(
            result.cycles >= 3 && result.synchronisations >= 3,
            "seed {seed}"
        );
        reboots += result.reboots;
        worst = worst.max(result.max_soc_loss_permille);
    }
    assert!(reboots > 500, "only {reboots} reboots");
    // The policy writes at every point, so a loss close to it shows it is the bound that holds.
    assert!((5..=10).contains(&worst), "worst loss {worst} permille");
}

/// MON-8 in the simulated week: the SoC record is written at every point of change, not at
/// every step.
#[test]
fn mon_8_soc_writes_follow_the_one_point_rule_not_the_tick() {
    let mut store = FaultyStorage::default();
    let (mut dev, _) = Device::boot(&mut store, 0);
    let mut rng = Rng(42);
    let mut t_ms = 0;
    let mut soc_changes = 0u32;
    let mut last_soc = None;
    while t_ms < DAY_MS {
        t_ms += STEP_MS;
        dev.boot_ms += STEP_MS;
        let (bank_ma, bank_mv) = plant(t_ms, dev.monitor.soc_permille().unwrap_or(500), &mut rng);
        let input = MonitorInput {
            bank_mv,
            bank_ma,
            capacity_mah: CAPACITY_MAH,
            cells_in_series: CELLS,
        };
        let _ = dev.monitor.update(dev.boot_ms, &input, &dev.settings);
        if dev.monitor.soc_permille().is_none() {
            dev.monitor.set_soc(dev.boot_ms, 500).unwrap();
        }
        let soc = dev.monitor.soc_permille().map(|s| s / 10);
        if last_soc.is_some() && soc != last_soc {
            soc_changes += 1;
        }
        last_soc = soc;
        let records = Records {
            settings: dev.settings,
            soc: dev.monitor.snapshot(),
            soc_due: dev.monitor.persist_due(dev.boot_ms),
            ..Records::default()
        };
        let report = dev.persistence.poll(&mut store, dev.boot_ms, &records);
        if report.soc == Outcome::Written {
            dev.monitor.mark_persisted();
        }
    }
    let points = dev.persistence.stats(RecordKind::SocPoint).writes;
    let whole = dev.persistence.stats(RecordKind::Soc).writes;
    let writes = points + whole;
    // Most SoC writes are 8-byte points; whole records come with synchronisations, latches and
    // the hourly time since full.
    assert!(points > 2 * whole, "{points} points, {whole} records");
    let steps = (DAY_MS / STEP_MS) as u32;
    assert!(writes < steps / 20, "{writes} SoC writes in {steps} steps");
    // At least one write per whole point crossed; at most that plus one per 10 minutes.
    assert!(
        writes >= soc_changes / 2,
        "{writes} writes for {soc_changes} points"
    );
    assert!(writes <= soc_changes + 24 * 6 + 1);
}
