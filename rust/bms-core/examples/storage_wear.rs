//! Flash wear of the persisted records: runs a typical solar day and a worst case through the
//! real write policy (monitor, history, settings, advertiser and `storage::Persistence`) and
//! prints writes and bytes per day for each record and the resulting flash lifetime.
//!
//! Run: `cargo run --release -p bms-core --example storage_wear`
//!
//! Flash model (Zephyr settings on ZMS, nRF52840 `storage_partition`):
//! - 32 KiB partition = 8 sectors of 4096 bytes, 10 000 erase cycles per sector.
//! - Every write of a value costs one 16-byte ZMS allocation-table entry (ATE); a value of at
//!   most 8 bytes lives inside the ATE, a longer one is written to the data area rounded up to
//!   8 bytes (conservative: the nRF52840 write block is 4). The settings backend writes a key's
//!   name entry only the first time, so a rewrite costs the value entry alone.
//! - Each sector loses 3 header ATEs (48 bytes), and when the write position enters a new sector
//!   ZMS garbage-collects one sector, copying every live entry forward: our records plus
//!   their name entries plus other settings (Bluetooth bonds etc.; 1 KiB assumed).
//!
//! ZMS facts (zephyrproject-rtos/zephyr `subsys/fs/zms/zms_priv.h`: `struct zms_ate` is 16
//! bytes, `ZMS_DATA_IN_ATE_SIZE` 8; `zms.c` `zms_flash_write_entry` copies a value of at most
//! 8 bytes into the ATE and writes no data; the empty, close and GC-done ATEs head a sector).
//! - ZMS writes round-robin through all sectors, so every sector is erased once per turn:
//!   erases per sector per day = flash bytes per day / usable bytes per sector / sectors.

use bms_core::history::{History, HistoryInput};
use bms_core::limits::READOUT_MIN_CHANGE_MS;
use bms_core::monitor::{Monitor, MonitorInput};
use bms_core::name::DeviceName;
use bms_core::protocol::DeviceSecrets;
use bms_core::readout::{Advertiser, ReadoutError, ReadoutValues, NONCES_PER_KEY, PAYLOAD_LEN};
use bms_core::settings::Settings;
use bms_core::soc::EstimatorKind;
use bms_core::storage::learned::LEARNED_INTERVAL_MS;
use bms_core::storage::{MemStorage, Outcome, Persistence, RecordKind, RecordStats, Records};

const STEP_MS: u64 = 1_000;
const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
const CAPACITY_MAH: u32 = 200_000;
const CELLS: u16 = 4;

const PARTITION_BYTES: u64 = 32 * 1024;
const SECTOR_BYTES: u64 = 4096;
const ERASE_CYCLES: u64 = 10_000;
const ATE_BYTES: u64 = 16;
const ATE_INLINE_MAX: u64 = 8;
const DATA_ALIGN: u64 = 8;
const SECTOR_HEADER_BYTES: u64 = 3 * ATE_BYTES;
const OTHER_LIVE_BYTES: u64 = 1024;
const GOAL_YEARS: f64 = 20.0;
/// Longest learned record (capacity of 5 varint bytes).
const LEARNED_MAX_LEN: u64 = 91;

/// Flash bytes one write of a `len`-byte value costs in ZMS.
fn flash_cost(len: u64) -> u64 {
    if len <= ATE_INLINE_MAX {
        ATE_BYTES
    } else {
        ATE_BYTES + len.div_ceil(DATA_ALIGN) * DATA_ALIGN
    }
}

/// What the bank does at time `t_ms` given its SoC: current in mA and voltage in mV.
type Plant = fn(t_ms: u64, soc_permille: u16, state: &mut PlantState) -> (i32, u32);

#[derive(Default)]
struct PlantState {
    charging: bool,
    absorb_since_ms: Option<u64>,
    noise: u64,
}

impl PlantState {
    /// A small deterministic ripple (± 500 mA) so that readings change as they do in life.
    fn ripple(&mut self) -> i32 {
        self.noise = self
            .noise
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((self.noise >> 33) % 1_000) as i32 - 500
    }
}

/// A 200 Ah 12.8 V bank on solar: loads at night, a 45 A solar bell during the day, held at the
/// tail current once full (so it synchronises every day).
fn solar_day(t_ms: u64, soc_permille: u16, state: &mut PlantState) -> (i32, u32) {
    let ripple = state.ripple();
    let in_day = t_ms % DAY_MS;
    let (sunrise, sunset) = (7 * HOUR_MS, 17 * HOUR_MS);
    if (sunrise..sunset).contains(&in_day) {
        if soc_permille >= 990 {
            return (3_000 + ripple / 4, 14_200);
        }
        let x = (in_day - sunrise) as f64 / (sunset - sunrise) as f64;
        let sun_ma = 45_000.0 * (core::f64::consts::PI * x).sin();
        (sun_ma as i32 - 4_000 + ripple, 13_500)
    } else if in_day < sunrise {
        (-6_000 + ripple, 13_100)
    } else {
        (-10_000 + ripple, 13_050)
    }
}

/// The hardest a bank can be worked all day: 0.5 C (100 A) down to 5 % and up to full without
/// rest, 3 minutes of absorption at the top (a synchronisation and a cycle every ~2.2 h).
fn worst_case(t_ms: u64, soc_permille: u16, state: &mut PlantState) -> (i32, u32) {
    let ripple = state.ripple();
    if state.charging && soc_permille >= 995 {
        let since = *state.absorb_since_ms.get_or_insert(t_ms);
        if t_ms.saturating_sub(since) < 4 * 60_000 {
            return (3_000 + ripple / 4, 14_200);
        }
        state.charging = false;
        state.absorb_since_ms = None;
    } else if !state.charging && soc_permille <= 50 {
        state.charging = true;
    }
    if state.charging {
        (100_000 + ripple, 13_800)
    } else {
        (-100_000 + ripple, 12_900)
    }
}

/// Heavy daily use: the worst case's 0.5 C cycling for 9 hours (two full cycles), then a small
/// standby load for the rest of the day.
fn heavy_use(t_ms: u64, soc_permille: u16, state: &mut PlantState) -> (i32, u32) {
    if t_ms % DAY_MS < 9 * HOUR_MS {
        worst_case(t_ms, soc_permille, state)
    } else {
        (-500 + state.ripple() / 10, 13_150)
    }
}

struct Scenario {
    name: &'static str,
    plant: Plant,
    /// Settings written by the user, per day.
    settings_changes_per_day: u64,
    /// Errors raised (each a counted history item), per day.
    errors_per_day: u64,
}

/// The records in the order of the table.
const KINDS: [RecordKind; RecordKind::COUNT] = [
    RecordKind::Settings,
    RecordKind::Soc,
    RecordKind::SocPoint,
    RecordKind::History,
    RecordKind::HistoryPoint,
    RecordKind::HistoryCounts,
    RecordKind::Nonce,
    RecordKind::Secrets,
    RecordKind::Learned,
    RecordKind::Name,
];

#[derive(Default, Clone, Copy)]
struct Day {
    writes: [u64; RecordKind::COUNT],
    bytes: [u64; RecordKind::COUNT],
    flash: [u64; RecordKind::COUNT],
    /// Instant Readout nonces used in the day (payload changes).
    nonces: u16,
}

/// Runs `scenario` for two days and returns the second (the first settles the state).
fn run(scenario: &Scenario) -> Day {
    let mut store = MemStorage::new();
    let (mut persistence, restored) = Persistence::restore(&mut store);
    // The product's estimator, so that what it learns is written as on a device.
    let mut monitor = Monitor::with_kind(EstimatorKind::Adaptive, restored.soc.ok());
    let mut history = History::default();
    let mut settings = restored.settings_or_default();
    let mut advertiser = Advertiser::new([9; 16], 0xA3EC, 0);
    let secrets = DeviceSecrets {
        passkey: 123_456,
        adv_key: [9; 16],
        read_protection: false,
        failed_pairings: 0,
        key_first_nonce: Some(0),
    };
    // BLE-3: the values the advertisement shows change at most once per READOUT_MIN_CHANGE_MS
    // (as `Bms::step` does; this bank raises no alarm, which would not wait).
    let mut shown = ReadoutValues::NOT_AVAILABLE;
    let mut hold_until_ms = 0;
    let mut first_nonce = None;
    let mut plant = PlantState::default();
    let mut payload = [0u8; PAYLOAD_LEN];
    let mut day = Day::default();
    let mut before = [RecordStats::default(); RecordKind::COUNT];
    let mut t_ms = 0;
    while t_ms < 2 * DAY_MS {
        t_ms += STEP_MS;
        let (bank_ma, bank_mv) =
            (scenario.plant)(t_ms, monitor.soc_permille().unwrap_or(500), &mut plant);
        let input = MonitorInput {
            bank_mv,
            bank_ma,
            capacity_mah: CAPACITY_MAH,
            cells_in_series: CELLS,
        };
        let status = monitor.update(t_ms, &input, &settings);
        if monitor.soc_permille().is_none() {
            monitor.set_soc(t_ms, 500).expect("bank known");
        }
        let _ = history.update(
            t_ms,
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
        // Two codes in turn, so that every error changes the last errors (one code over and
        // over would leave them unchanged after the fourth, and store nothing).
        let error_every_ms = DAY_MS / scenario.errors_per_day.max(1);
        if scenario.errors_per_day > 0 && t_ms % error_every_ms == 0 {
            history.record_error(if (t_ms / error_every_ms) % 2 == 0 {
                3
            } else {
                5
            });
        }
        if scenario.settings_changes_per_day > 0
            && t_ms % (DAY_MS / scenario.settings_changes_per_day) == 0
        {
            let detection = if settings.charged_detection_min == 3 {
                4
            } else {
                3
            };
            let new = Settings {
                charged_detection_min: detection,
                ..settings
            };
            settings.write(new).expect("valid settings");
        }
        // The advertisement is rebuilt every second with the live readings, which it shows at
        // most once per READOUT_MIN_CHANGE_MS (a new nonce each, once the first reservation is
        // written).
        let values = ReadoutValues {
            soc_permille: monitor.soc_permille(),
            bank_mv: Some(bank_mv),
            current_ma: Some(bank_ma),
            ..ReadoutValues::NOT_AVAILABLE
        };
        if t_ms >= hold_until_ms && values != shown {
            shown = values;
            hold_until_ms = t_ms + READOUT_MIN_CHANGE_MS;
        }
        if t_ms == DAY_MS {
            first_nonce = Some(advertiser.nonce());
        }
        match advertiser.payload(&shown, &mut payload) {
            Ok(_) | Err(ReadoutError::NotReserved) => {}
            Err(e) => panic!("payload: {e}"),
        }

        let records = Records {
            settings,
            soc: monitor.snapshot(),
            soc_due: monitor.persist_due(t_ms),
            balanced_at_full: None,
            undervoltage_disconnect: false,
            history: *history.record(),
            history_due: history.all_due(t_ms),
            history_counted_due: history.counted_due(),
            nonce: advertiser.nonce_to_persist(),
            secrets: Some(secrets),
            learned: monitor.learned(),
            flush: false,
            hold_older_formats: false,
            name: DeviceName::default(),
        };
        let report = persistence.poll(&mut store, t_ms, &records);
        if report.soc == Outcome::Written {
            monitor.mark_persisted();
        }
        if report.history == Outcome::Written {
            history.mark_persisted(t_ms);
        } else if report.history_counted == Outcome::Written {
            history.mark_counted_persisted();
        }
        if let (Outcome::Written, Some(next)) = (report.nonce, records.nonce) {
            advertiser.nonce_persisted(next);
        }
        for (i, kind) in KINDS.into_iter().enumerate() {
            let stats = persistence.stats(kind);
            let writes = u64::from(stats.writes) - u64::from(before[i].writes);
            let bytes = stats.bytes - before[i].bytes;
            before[i] = stats;
            if t_ms > DAY_MS && writes > 0 {
                day.writes[i] += writes;
                day.bytes[i] += bytes;
                day.flash[i] += writes * flash_cost(bytes / writes);
            }
        }
    }
    day.nonces = first_nonce.map_or(0, |first| advertiser.nonce().wrapping_sub(first));
    day
}

/// Live bytes ZMS copies forward at each garbage collection: the largest value of each record
/// with its ATE and name entry, plus the other settings.
fn live_bytes() -> u64 {
    // Upper bounds of the encoded lengths, in the order of KINDS (settings, SoC record, SoC
    // point, history: `the_history_record_is_at_most_139_bytes`, history point, history counts,
    // nonce, secrets version 4, learned, device name of 18 bytes).
    let largest = [20, 49, 8, 139, 8, 8, 8, 31, LEARNED_MAX_LEN, 25];
    let names: u64 = KINDS
        .iter()
        .map(|kind| flash_cost(kind.key().len() as u64))
        .sum();
    largest.iter().map(|&len| flash_cost(len)).sum::<u64>() + names + OTHER_LIVE_BYTES
}

fn main() {
    let scenarios = [
        Scenario {
            name: "typical solar day (200 Ah, one cycle and one synchronisation a day)",
            plant: solar_day,
            settings_changes_per_day: 0,
            errors_per_day: 0,
        },
        Scenario {
            name: "heavy use (two full 0.5 C cycles a day, 24 settings writes, 24 errors)",
            plant: heavy_use,
            settings_changes_per_day: 24,
            errors_per_day: 24,
        },
        Scenario {
            name: "worst case (0.5 C cycling day and night, 24 settings writes, 24 errors)",
            plant: worst_case,
            settings_changes_per_day: 24,
            errors_per_day: 24,
        },
    ];
    let sectors = PARTITION_BYTES / SECTOR_BYTES;
    let usable = SECTOR_BYTES - SECTOR_HEADER_BYTES - live_bytes();
    println!(
        "flash: {} KiB partition, {sectors} sectors of {SECTOR_BYTES} B, {ERASE_CYCLES} erase cycles;",
        PARTITION_BYTES / 1024
    );
    println!(
        "ZMS: {ATE_BYTES} B ATE per write, values <= {ATE_INLINE_MAX} B inside it, data rounded to {DATA_ALIGN} B;"
    );
    println!(
        "      per sector {SECTOR_HEADER_BYTES} B headers + {} B live data copied at GC = {usable} B usable",
        live_bytes()
    );
    let mut worst_years = f64::INFINITY;
    for scenario in &scenarios {
        let day = run(scenario);
        println!();
        println!("{}", scenario.name);
        println!(
            "  {:<10} {:>10} {:>12} {:>16}",
            "record", "writes/day", "bytes/day", "flash bytes/day"
        );
        for (i, kind) in KINDS.into_iter().enumerate() {
            println!(
                "  {:<10} {:>10} {:>12} {:>16}",
                kind.name(),
                day.writes[i],
                day.bytes[i],
                day.flash[i]
            );
        }
        let total_flash: u64 = day.flash.iter().sum();
        println!(
            "  {:<10} {:>10} {:>12} {:>16}",
            "total",
            day.writes.iter().sum::<u64>(),
            day.bytes.iter().sum::<u64>(),
            total_flash
        );
        let lifetime = |flash: u64| {
            let erases_per_sector_day = flash as f64 / usable as f64 / sectors as f64;
            (
                erases_per_sector_day,
                ERASE_CYCLES as f64 / erases_per_sector_day / 365.25,
            )
        };
        println!(
            "  readout: {} payload changes (nonces) a day: the key has used up its nonces and is renewed after {:.1} days",
            day.nonces,
            f64::from(NONCES_PER_KEY) / f64::from(day.nonces.max(1))
        );
        let (erases_per_sector_day, years) = lifetime(total_flash);
        println!(
            "  erases per sector per day {erases_per_sector_day:.3}; flash lifetime {years:.1} years"
        );
        // The learned record written at every chance its interval allows, whatever is learned.
        let learned = KINDS.iter().position(|&k| k == RecordKind::Learned);
        let capped = total_flash - learned.map_or(0, |i| day.flash[i])
            + DAY_MS / LEARNED_INTERVAL_MS * flash_cost(LEARNED_MAX_LEN);
        let (_, capped_years) = lifetime(capped);
        println!(
            "  with the learned record at its cap ({} a day): {capped} flash bytes/day, {capped_years:.1} years",
            DAY_MS / LEARNED_INTERVAL_MS
        );
        worst_years = worst_years.min(years).min(capped_years);
    }
    println!();
    let verdict = if worst_years >= GOAL_YEARS {
        "met"
    } else {
        "NOT met"
    };
    println!("goal >= {GOAL_YEARS:.0} years in the worst case: {verdict} ({worst_years:.1} years)");
}
