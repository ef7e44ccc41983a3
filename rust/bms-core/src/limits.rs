//! Every threshold, delay and hysteresis of the control path, in one place: the [`LIMITS`] table
//! of cell protections (one row per [`ProtectionId`], foxBMS `diag_cfg` style) and named
//! constants for the rest. Inputs: none. Outputs: constants read by bank, protection, balancer
//! and LEDs.
//!
//! Levels are integers with the unit in the name: cell voltages in mV, temperatures in 0.1 °C
//! (`ddegc`), times in ms.

use crate::bus::BatteryModel;
use crate::codes::Code;
use crate::reasons::Reason;
use crate::stable_enum::stable_enum;

stable_enum! {
    /// One cell protection of [`LIMITS`]. The discriminant is the row index.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ProtectionId {
        /// PROT-2: cell under-voltage ("imminent under-voltage").
        CellUndervoltage = 0 => "cell_undervoltage",
        /// PROT-3: a cell below the pre-alarm level (setting).
        CellLow = 1 => "cell_low",
        /// PROT-4: cell over-voltage.
        CellOvervoltage = 2 => "cell_overvoltage",
        /// PROT-5: cell temperature too low to charge.
        LowTemperature = 3 => "low_temperature",
        /// PROT-6: cell temperature too high to charge.
        HighTemperatureCharge = 4 => "high_temperature_charge",
        /// PROT-6 **(choice)**: cell temperature too high to discharge.
        HighTemperatureDischarge = 5 => "high_temperature_discharge",
    }
}

impl ProtectionId {
    /// The table row of this protection.
    pub const fn limit(self) -> &'static Limit {
        let mut rest: &'static [Limit] = &LIMITS;
        while let [row, tail @ ..] = rest {
            if row.id as u8 == self as u8 {
                return row;
            }
            rest = tail;
        }
        // Not reached: every id has its row (checked below, at compile time).
        let [first, ..] = &LIMITS;
        first
    }
}

/// The bank aggregate a protection watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// Lowest cell voltage of the bank, mV.
    MinCellMv,
    /// Highest cell voltage of the bank, mV.
    MaxCellMv,
    /// Lowest cell temperature of the bank, 0.1 °C.
    MinTempDdegc,
    /// Highest cell temperature of the bank, 0.1 °C.
    MaxTempDdegc,
}

/// A comparison of a measured value against a level, written as the spec writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// value < level
    Below(i32),
    /// value ≤ level
    AtMost(i32),
    /// value > level
    Above(i32),
    /// value ≥ level
    AtLeast(i32),
}

impl Level {
    /// Whether `value` satisfies the comparison.
    pub const fn holds(self, value: i32) -> bool {
        match self {
            Level::Below(level) => value < level,
            Level::AtMost(level) => value <= level,
            Level::Above(level) => value > level,
            Level::AtLeast(level) => value >= level,
        }
    }

    /// The level value.
    pub const fn value(self) -> i32 {
        match self {
            Level::Below(v) | Level::AtMost(v) | Level::Above(v) | Level::AtLeast(v) => v,
        }
    }

    /// The same comparison moved by `offset` (used when a setting moves a row's levels).
    pub const fn shifted(self, offset: i32) -> Level {
        match self {
            Level::Below(v) => Level::Below(v.saturating_add(offset)),
            Level::AtMost(v) => Level::AtMost(v.saturating_add(offset)),
            Level::Above(v) => Level::Above(v.saturating_add(offset)),
            Level::AtLeast(v) => Level::AtLeast(v.saturating_add(offset)),
        }
    }
}

/// What a protection does while it is active (read by `Protection::step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Activates the pre-alarm output (a warning; ATD/ATC unaffected).
    Prealarm,
    /// Makes ATC free-floating.
    TripCharge,
    /// Makes ATD free-floating.
    TripDischarge,
    /// PROT-2: activates the pre-alarm at once and makes ATD free-floating once the pre-alarm
    /// output has been high for [`PREALARM_LEAD_MS`], latched until the row releases. One row
    /// at most.
    PrealarmThenDischarge,
}

/// One row of [`LIMITS`]: a latched condition with debounce and hysteresis.
///
/// The condition becomes active once `trip` has held continuously for `trip_debounce_ms` (or,
/// with `trip_over_window`, never missed for a whole window), and inactive once `release` has
/// held continuously for `release_debounce_ms`; between the two levels it keeps its state (the
/// hysteresis). A debounce of 0 acts on the first tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The protection this row configures (equals the row's position).
    pub id: ProtectionId,
    /// The aggregate compared against the levels.
    pub quantity: Quantity,
    /// Level at which the condition trips.
    pub trip: Level,
    /// Level at which the condition releases.
    pub release: Level,
    /// How long `trip` must hold before the condition becomes active, ms.
    pub trip_debounce_ms: u32,
    /// How long `release` must hold before the condition becomes inactive, ms.
    pub release_debounce_ms: u32,
    /// PROT-5/PROT-6 **(choice)**: the trip is judged over its debounce window instead of
    /// continuously: a running trip debounce restarts only once the trip level has not held for
    /// a whole window, so a reading that keeps crossing the level (4.9/5.1 °C every second)
    /// still trips. The release always needs its level to hold continuously (the safe side).
    pub trip_over_window: bool,
    /// What the active condition does.
    pub effect: Effect,
    /// The reason the affected output shows while the condition is active.
    pub reason: Reason,
    /// The code raised while the condition is active.
    pub code: Code,
    /// For a settable trip level: the allowed `min..=max` of the setting (the release level
    /// moves with it, keeping the hysteresis); `None` when fixed.
    pub settable: Option<(i32, i32)>,
}

impl Limit {
    /// The hysteresis between release and trip levels, in the quantity's unit.
    pub const fn hysteresis(&self) -> i32 {
        self.release.value().saturating_sub(self.trip.value())
    }
}

/// PROT-5/PROT-6 **(choice)**: the temperature trips and releases act only once their level has
/// held this long, so that 0.1–0.2 °C of sensor noise around a threshold does not switch ATC or
/// ATD back and forth (temperatures change over minutes; reports come once a second), ms. The
/// trips are judged over this window ([`Limit::trip_over_window`]): noise that keeps crossing
/// the level trips, and the release hysteresis keeps it from toggling.
pub const TEMP_DEBOUNCE_MS: u32 = 2000;

#[rustfmt::skip]
/// The cell protections (PROT-2..6). One row per [`ProtectionId`], in id order. The protection
/// reads every column: levels and debounces, what the active row does to the outputs (`effect`),
/// with which reason, and which code it raises.
pub const LIMITS: [Limit; ProtectionId::COUNT] = [
    Limit { id: ProtectionId::CellUndervoltage,         quantity: Quantity::MinCellMv,    trip: Level::Below(2800), release: Level::AtLeast(3200), trip_debounce_ms: 5000, release_debounce_ms: 0,     trip_over_window: false, effect: Effect::PrealarmThenDischarge, reason: Reason::CellUndervoltage,    code: Code::CellUndervoltage, settable: None },
    Limit { id: ProtectionId::CellLow,                  quantity: Quantity::MinCellMv,    trip: Level::Below(3100), release: Level::AtLeast(3150), trip_debounce_ms: 5000, release_debounce_ms: 10000, trip_over_window: false, effect: Effect::Prealarm,              reason: Reason::PrealarmLevel,       code: Code::LowCellVoltage,   settable: Some((2850, 3150)) },
    Limit { id: ProtectionId::CellOvervoltage,          quantity: Quantity::MaxCellMv,    trip: Level::Above(3750), release: Level::Below(3600),   trip_debounce_ms: 1000, release_debounce_ms: 0,     trip_over_window: false, effect: Effect::TripCharge,            reason: Reason::CellOvervoltage,     code: Code::CellOvervoltage,  settable: None },
    Limit { id: ProtectionId::LowTemperature,           quantity: Quantity::MinTempDdegc, trip: Level::Below(50),   release: Level::AtLeast(70),   trip_debounce_ms: TEMP_DEBOUNCE_MS, release_debounce_ms: TEMP_DEBOUNCE_MS, trip_over_window: true, effect: Effect::TripCharge,    reason: Reason::LowTemperature,      code: Code::LowTemperature,   settable: None },
    Limit { id: ProtectionId::HighTemperatureCharge,    quantity: Quantity::MaxTempDdegc, trip: Level::Above(500),  release: Level::AtMost(480),   trip_debounce_ms: TEMP_DEBOUNCE_MS, release_debounce_ms: TEMP_DEBOUNCE_MS, trip_over_window: true, effect: Effect::TripCharge,    reason: Reason::HighTemperature,     code: Code::HighTemperature,  settable: None },
    Limit { id: ProtectionId::HighTemperatureDischarge, quantity: Quantity::MaxTempDdegc, trip: Level::Above(600),  release: Level::AtMost(550),   trip_debounce_ms: TEMP_DEBOUNCE_MS, release_debounce_ms: TEMP_DEBOUNCE_MS, trip_over_window: true, effect: Effect::TripDischarge, reason: Reason::VeryHighTemperature, code: Code::HighTemperature,  settable: None },
];

// Every id has exactly its own row, at its own index; settable defaults lie within their bounds.
const _: () = {
    let mut rest: &[Limit] = &LIMITS;
    let mut i = 0;
    let mut lead_rows = 0;
    while let [row, tail @ ..] = rest {
        assert!(row.id as usize == i);
        if matches!(row.effect, Effect::PrealarmThenDischarge) {
            lead_rows += 1;
        }
        if let Some((min, max)) = row.settable {
            let trip = row.trip.value();
            assert!(min <= trip && trip <= max);
        }
        i += 1;
        rest = tail;
    }
    assert!(i == ProtectionId::COUNT);
    assert!(lead_rows <= 1);
    // A condition active before a restart is raised again within the window (HIST-1).
    let mut rest: &[Limit] = &LIMITS;
    while let [row, tail @ ..] = rest {
        let debounce = row.trip_debounce_ms as u64;
        assert!(DISCOVERY_MAX_MS + TOPOLOGY_SETTLE_MS + debounce <= RESTART_SAME_ERROR_MS);
        rest = tail;
    }
    // The slow tick is slower; discovery ends before a silent battery counts as lost.
    assert!(LOW_POWER_TICK_MS > TICK_MS);
    assert!(DISCOVERY_MS < BATTERY_LOST_MS);
    assert!(DISCOVERY_MAX_MS >= 2 * MAX_POLL_ROUND_MS + DISCOVERY_MS);
    // The layout is judged after every battery reported once (1 s period), before one is lost.
    assert!(TOPOLOGY_SETTLE_MS > 1000 && TOPOLOGY_SETTLE_MS < BATTERY_LOST_MS);
    // The self-check can pass well before it times out, even in the slow tick.
    assert!(SELF_CHECK_BUS_WAIT_MS < SELF_CHECK_TIMEOUT_MS);
    assert!((SELF_CHECK_STEPS as u64) * (LOW_POWER_TICK_MS as u64) * 2 <= SELF_CHECK_TIMEOUT_MS);
};

/// PROT-2: how long the pre-alarm output must have been active before ATD goes free-floating for
/// under-voltage, ms.
pub const PREALARM_LEAD_MS: u64 = 30_000;

/// PROT-3 **(choice)**: the pre-alarm output is released this long after ATD went
/// free-floating for under-voltage, so that a buzzer or relay on it does not drain an empty
/// battery; the alarm stays on the LED and in the app, ms.
pub const PREALARM_RELEASE_MS: u64 = 60_000;

/// PROT-8 **(choice)**: the remote on/off state changes only once the new state has held this
/// long, both ways, so that a glitch on the wiring does not switch the outputs, ms.
pub const REMOTE_DEBOUNCE_MS: u64 = 500;

/// PROT-10: delay between a failed or aborted firmware update and ATD going free-floating, ms.
pub const DFU_FAILED_ATD_DELAY_MS: u64 = 120_000;
/// DFU-1: an upload with no new chunk for this long counts as aborted (PROT-10 then applies), ms.
pub const DFU_STALL_MS: u64 = 120_000;

/// DFU-1 **(choice)**: control steps a new image must complete before it is confirmed (2 s at
/// the normal tick).
pub const SELF_CHECK_STEPS: u32 = 20;
/// DFU-1 **(choice)**: how long a new image waits for the first battery report before it takes
/// the bus as having no battery connected (a bench, a new installation), which is no firmware
/// fault; batteries report at least once a second, ms.
pub const SELF_CHECK_BUS_WAIT_MS: u64 = 10_000;
/// DFU-1 **(choice)**: a new image that has not passed its self-check this long after start
/// has failed it: the firmware reboots and MCUboot reverts to the previous image, ms.
pub const SELF_CHECK_TIMEOUT_MS: u64 = 60_000;
/// DFU-1 **(choice)**: a record the store holds in an older format is rewritten in the new one
/// only once the self-check has passed, or this long after start, ms: by then an image that
/// failed it has rebooted and MCUboot has reverted to the firmware that wrote the old format,
/// which could not read the new one (its pairing secrets and history would read as lost).
pub const OLDER_FORMAT_HOLD_MS: u64 = SELF_CHECK_TIMEOUT_MS + 30_000;

/// PROT-9 **(choice)**: ATD returns when SoC ≥ discharge floor + this many percentage points.
pub const FLOOR_RELEASE_POINTS: u8 = 3;

/// PROT-8: Remote L below this (pulled to battery minus) means ON, mV.
pub const REMOTE_L_ON_BELOW_MV: u32 = 3500;
/// PROT-8: Remote H above this (and below battery voltage) means ON, mV.
pub const REMOTE_H_ON_ABOVE_MV: u32 = 2900;
/// PROT-8 **(choice)**: Remote H measured up to this much above the measured battery voltage
/// still counts as "below Vbat": H wired to battery plus reads Vbat, give or take ADC error, mV.
pub const REMOTE_H_VBAT_TOLERANCE_MV: u32 = 300;
/// PROT-8 **(choice)**: Remote L and H within this of each other count as interconnected, mV.
pub const REMOTE_LINK_TOLERANCE_MV: u32 = 150;

/// How often a node polls its persisted records although none of their owners asks (for the
/// records only the store's bookkeeping knows are due: settings or secrets changed outside a
/// GATT request, a learned-values lesson, a retry after a failed write), ms. The SoC state,
/// the history and the nonce reservation are written at the step that makes them due.
pub const PERSIST_POLL_MS: u64 = 1_000;

/// The control loop period (one tick), ms.
pub const TICK_MS: u32 = 100;
/// PROT-12 **(choice)**: the tick in low-power mode, ms. Ten times slower: protections with a
/// debounce still act on time because [`crate::Bms::next_deadline_ms`] includes their expiry.
pub const LOW_POWER_TICK_MS: u32 = 1000;

/// BANK-4 **(choice)**: a battery that sent nothing valid for this long is lost, ms.
pub const BATTERY_LOST_MS: u64 = 5000;
/// BANK-4 **(choice)**: the longest polling round a battery line may need (every pack asked
/// once, answers at a typical latency), ms: half the lost time, so that a pack whose answer is
/// missed once (retries, skipped) is still read again before it counts as lost. A line that
/// would take longer is refused when it is configured.
pub const MAX_POLL_ROUND_MS: u64 = BATTERY_LOST_MS / 2;
/// BANK-1/PROT-1 **(choice)**: after the first report, wait this long for the other batteries
/// before judging the first data set complete (batteries report at least once a second), ms.
pub const DISCOVERY_MS: u64 = 2000;
/// BANK-1/PROT-1 **(choice)**: the discovery window stays open at least this long after each
/// battery found in it, ms. Packs polled in turn on a line first report one after another over
/// the first round, which is longer than [`DISCOVERY_MS`] on a slow line (16 Daly packs at
/// 115 200 bit/s: 2.8 s, the first round also reading counts and capacities), a fraction of a
/// second apart: the window runs on while they keep appearing.
pub const DISCOVERY_NEXT_MS: u64 = 1500;
/// BANK-1/PROT-1 **(choice)**: the discovery window ends at the latest this long after the
/// first report, however many batteries keep appearing: two of the longest poll rounds and
/// the window after them, ms.
pub const DISCOVERY_MAX_MS: u64 = 8000;
/// BANK-1/BANK-2 **(choice)**: the bank layout is judged (configuration check) only once the
/// set of batteries has been unchanged this long, counted from the first report and from each
/// topology change: 1.5 report periods, so that every battery has reported once. Until then a
/// half-discovered bank (one battery of a 2×2 bank on 24 V) raises no false alarm, ms.
pub const TOPOLOGY_SETTLE_MS: u64 = 1500;

/// HIST-1 **(choice)**: an error or alarm raised this soon after the start (the first step)
/// whose code the history's last errors already hold is the one that was active before the
/// restart, found again: it is not recorded again, so a reboot loop does not fill the last
/// errors with one error. Long enough for the first data set to be judged at the end of the
/// longest discovery window and for the longest trip debounce to run after it, ms.
pub const RESTART_SAME_ERROR_MS: u64 = 20_000;

/// BANK-2: most batteries in one bank (12.8 V and 25.6 V batteries); also the bank table size.
pub const MAX_BATTERIES: usize = 50;
/// BANK-2: most 51.2 V batteries in one bank.
pub const MAX_BATTERIES_51V2: usize = 25;
/// BANK-2: the supported bank nominal voltages (12, 24, 48 V), mV.
pub const BANK_NOMINAL_MV: [u32; 3] = [12_800, 25_600, 51_200];
/// The BMS operating voltage range (8–70 V, the supply range the hardware is specified for); outside it the bank voltage is not
/// trusted for topology discovery, mV.
pub const SUPPLY_MIN_MV: u32 = 8_000;
/// See [`SUPPLY_MIN_MV`].
pub const SUPPLY_MAX_MV: u32 = 70_000;

/// Most batteries allowed in one bank of `model` (BANK-2).
pub const fn max_batteries(model: BatteryModel) -> usize {
    match model {
        BatteryModel::Lfp12V8 | BatteryModel::Lfp25V6 => MAX_BATTERIES,
        BatteryModel::Lfp51V2 => MAX_BATTERIES_51V2,
    }
}

/// PROT-13 **(choice)**: a reported cell voltage must lie in this range (inclusive) to be
/// plausible, mV. A report with a cell outside it is invalid: ignored like a missing report
/// (BANK-4's lost time applies) and counted; a plausible value is always believed.
pub const CELL_VALID_MV: (u16, u16) = (500, 4500);
/// PROT-13 **(choice)**: a reported temperature must lie in this range (inclusive) to be
/// plausible, 0.1 °C (see [`CELL_VALID_MV`]).
pub const TEMP_VALID_DDEGC: (i16, i16) = (-400, 1000);
/// PROT-13 **(choice)**: a reported battery current must not exceed this many times the
/// battery's nominal capacity per hour (10 C: 1 000 A from a 100 Ah battery, which no LiFePO4
/// battery of the supported models delivers) to be plausible (see [`CELL_VALID_MV`]). One
/// report of an absurd current (i32::MIN mA from a garbled frame) counted for a report period
/// took the SoC to 0 % or 100 % at once.
pub const CURRENT_VALID_C: u32 = 10;

/// BAL-2: the balancer state is Unknown when the last full charge is older than this, ms.
pub const BALANCER_STALE_MS: u64 = 30 * 24 * 3600 * 1000;
/// BAL-3: the largest cell spread at full charge still judged Balanced, mV.
pub const BALANCED_SPREAD_MV: u16 = 30;
/// BAL-3 **(choice)**: the bank is charging (for "Balancing") above this bank current, mA.
pub const CHARGING_MIN_MA: i32 = 100;

/// BLE-2 **(choice)**: a pairing window (after a press of the button, or after power-up while no
/// bond exists) stays open this long, ms.
pub const PAIRING_WINDOW_MS: u64 = 180_000;
/// BLE-2 **(choice)**: the back-off after the first failed pairing attempt, ms; it doubles with
/// every further failure in a row (5, 10, 20, 40, 80 s: six attempts in a window).
pub const PAIRING_BACKOFF_FIRST_MS: u64 = 5_000;
/// BLE-2 **(choice)**: the longest back-off after failed pairing attempts, ms.
pub const PAIRING_BACKOFF_MAX_MS: u64 = 3_600_000;
/// BLE-2 **(choice)**: failed pairing attempts against one passkey after which the next press
/// of the button makes a new one (bonds kept) before the LED shows it. An LE Secure
/// Connections passkey entry that fails at its k-th round tells the peer the passkey's first
/// k bits (about 2 a try on average, 20 in all), and successful pairings and new windows do
/// not make the peer forget them: after 4 failures a guess still has about 1 chance in 4 000.
pub const PASSKEY_MAX_FAILED_ATTEMPTS: u32 = 4;
/// BLE-2 **(choice)**: the button held this long resets pairing (every bond removed, a new
/// passkey), ms.
pub const PAIRING_RESET_HOLD_MS: u64 = 10_000;
/// A button press shorter than this is contact bounce, not a press, ms.
pub const BUTTON_PRESS_MIN_MS: u64 = 50;
/// BLE-2: most bonds the BLE stack keeps (the firmware's `CONFIG_BT_MAX_PAIRED`).
pub const MAX_BONDS: usize = 4;
/// BLE-2: the blue LED blinks the passkey digit by digit (a digit d as d flashes, 0 as ten):
/// each flash lit this long, ms.
pub const PASSKEY_FLASH_ON_MS: u64 = 300;
/// BLE-2: dark this long after each flash of a passkey digit, ms.
pub const PASSKEY_FLASH_OFF_MS: u64 = 400;
/// BLE-2: dark this long between two digits of the passkey, ms.
pub const PASSKEY_DIGIT_GAP_MS: u64 = 1_500;
/// BLE-2: the passkey is blinked this many times after a press.
pub const PASSKEY_REPEATS: u32 = 2;

/// BLE-3 **(choice)**: the Instant Readout payload changes at most once per this time, so the
/// 16-bit nonce lasts weeks under one key (docs/persistence.md), ms.
pub const READOUT_MIN_CHANGE_MS: u64 = 20_000;
/// BLE-3 **(choice)**: a change of the error, the outputs or a warning or alarm goes out at
/// once, but such changes draw on a budget of this many that refills by one every
/// [`READOUT_MIN_CHANGE_MS`], and so do the other changes: however the values move (an output
/// that flaps with a battery's charge switch every second, a forged battery frame every
/// second), the payload changes at most this many times plus once per
/// [`READOUT_MIN_CHANGE_MS`], the worst case of docs/persistence.md.
pub const READOUT_URGENT_BURST: u64 = 5;

/// SET-2 **(choice)**: settings, passkey and read-protection changes from the user are written
/// to flash at most once per this time (the first at once, the rest of a burst when it ends or
/// when the link drops), ms.
pub const USER_WRITE_INTERVAL_MS: u64 = 10_000;

/// BANK-1 **(choice)**: a battery with a new serial joins the bank only after this many valid
/// reports in a row (a single garbled frame with a "new" serial creates nothing).
pub const BATTERY_JOIN_REPORTS: u8 = 3;

/// LED-1/LED-2: a blinking LED is lit this long per period, ms.
pub const LED_BLINK_ON_MS: u32 = 100;
/// LED-1/LED-2: a blinking LED is dark this long per period, ms.
pub const LED_BLINK_OFF_MS: u32 = 900;

#[cfg(test)]
mod tests {
    use super::*;

    // The table itself, value by value against the spec text (as foxBMS's test_diag_cfg.c does).
    #[test]
    fn table_rows_match_the_spec() {
        let uv = ProtectionId::CellUndervoltage.limit();
        assert_eq!(
            (uv.trip, uv.release),
            (Level::Below(2800), Level::AtLeast(3200))
        );
        assert_eq!((uv.trip_debounce_ms, uv.release_debounce_ms), (5000, 0));
        assert_eq!(uv.effect, Effect::PrealarmThenDischarge);
        assert_eq!(uv.quantity, Quantity::MinCellMv);

        let low = ProtectionId::CellLow.limit();
        assert_eq!(
            (low.trip, low.release),
            (Level::Below(3100), Level::AtLeast(3150))
        );
        assert_eq!(
            (low.trip_debounce_ms, low.release_debounce_ms),
            (5000, 10_000)
        );
        assert_eq!(low.settable, Some((2850, 3150)));
        assert_eq!(low.hysteresis(), 50);
        assert_eq!(low.effect, Effect::Prealarm);

        let ov = ProtectionId::CellOvervoltage.limit();
        assert_eq!(
            (ov.trip, ov.release),
            (Level::Above(3750), Level::Below(3600))
        );
        assert_eq!((ov.trip_debounce_ms, ov.release_debounce_ms), (1000, 0));
        assert_eq!(ov.effect, Effect::TripCharge);
        assert_eq!(ov.quantity, Quantity::MaxCellMv);

        let lt = ProtectionId::LowTemperature.limit();
        assert_eq!(
            (lt.trip, lt.release),
            (Level::Below(50), Level::AtLeast(70))
        );
        assert_eq!((lt.trip_debounce_ms, lt.release_debounce_ms), (2000, 2000));
        // PROT-5/PROT-6 rev 2: temperature trips are judged over the window, cell ones are not.
        for limit in &LIMITS {
            let temperature = matches!(
                limit.quantity,
                Quantity::MinTempDdegc | Quantity::MaxTempDdegc
            );
            assert_eq!(limit.trip_over_window, temperature, "{:?}", limit.id);
        }
        assert_eq!(
            (lt.effect, lt.quantity),
            (Effect::TripCharge, Quantity::MinTempDdegc)
        );

        let ht = ProtectionId::HighTemperatureCharge.limit();
        assert_eq!(
            (ht.trip, ht.release),
            (Level::Above(500), Level::AtMost(480))
        );
        assert_eq!((ht.trip_debounce_ms, ht.release_debounce_ms), (2000, 2000));
        assert_eq!(
            (ht.effect, ht.quantity),
            (Effect::TripCharge, Quantity::MaxTempDdegc)
        );

        let htd = ProtectionId::HighTemperatureDischarge.limit();
        assert_eq!(
            (htd.trip, htd.release),
            (Level::Above(600), Level::AtMost(550))
        );
        assert_eq!(
            (htd.trip_debounce_ms, htd.release_debounce_ms),
            (2000, 2000)
        );
        assert_eq!(
            (htd.effect, htd.quantity),
            (Effect::TripDischarge, Quantity::MaxTempDdegc)
        );
    }

    #[test]
    fn every_id_has_its_own_row() {
        for (i, id) in ProtectionId::ALL.into_iter().enumerate() {
            assert_eq!(id.index(), i);
            assert_eq!(LIMITS[i].id, id);
            assert_eq!(id.limit().id, id);
        }
    }

    #[test]
    fn release_levels_give_hysteresis_on_the_safe_side() {
        for limit in &LIMITS {
            match limit.quantity {
                Quantity::MinCellMv | Quantity::MinTempDdegc => assert!(limit.hysteresis() > 0),
                Quantity::MaxCellMv | Quantity::MaxTempDdegc => assert!(limit.hysteresis() < 0),
            }
            // A value can never trip and release at once.
            for v in -1000..6000 {
                assert!(
                    !(limit.trip.holds(v) && limit.release.holds(v)),
                    "{limit:?} at {v}"
                );
            }
        }
    }

    #[test]
    fn named_constants_match_the_spec() {
        assert_eq!(PREALARM_LEAD_MS, 30_000);
        assert_eq!(PREALARM_RELEASE_MS, 60_000);
        assert_eq!(REMOTE_DEBOUNCE_MS, 500);
        assert_eq!(DFU_FAILED_ATD_DELAY_MS, 120_000);
        assert_eq!(DFU_STALL_MS, 120_000);
        assert_eq!(
            (
                SELF_CHECK_STEPS,
                SELF_CHECK_BUS_WAIT_MS,
                SELF_CHECK_TIMEOUT_MS
            ),
            (20, 10_000, 60_000)
        );
        assert_eq!(FLOOR_RELEASE_POINTS, 3);
        // The monitor keeps the PROT-9 latch; its release must be this table's.
        assert_eq!(
            crate::monitor::RELEASE_PERMILLE,
            u16::from(FLOOR_RELEASE_POINTS) * 10
        );
        assert_eq!((REMOTE_L_ON_BELOW_MV, REMOTE_H_ON_ABOVE_MV), (3500, 2900));
        assert_eq!(TICK_MS, 100);
        assert_eq!(BATTERY_LOST_MS, 5000);
        assert_eq!((MAX_BATTERIES, MAX_BATTERIES_51V2), (50, 25));
        assert_eq!(max_batteries(BatteryModel::Lfp12V8), 50);
        assert_eq!(max_batteries(BatteryModel::Lfp25V6), 50);
        assert_eq!(max_batteries(BatteryModel::Lfp51V2), 25);
        assert_eq!(BANK_NOMINAL_MV, [12_800, 25_600, 51_200]);
        assert_eq!(CELL_VALID_MV, (500, 4500));
        assert_eq!(TEMP_VALID_DDEGC, (-400, 1000));
        assert_eq!(CURRENT_VALID_C, 10);
        assert_eq!(BALANCER_STALE_MS, 2_592_000_000);
        assert_eq!(BALANCED_SPREAD_MV, 30);
    }

    #[test]
    fn levels_compare_as_written() {
        assert!(Level::Below(10).holds(9) && !Level::Below(10).holds(10));
        assert!(Level::AtMost(10).holds(10) && !Level::AtMost(10).holds(11));
        assert!(Level::Above(10).holds(11) && !Level::Above(10).holds(10));
        assert!(Level::AtLeast(10).holds(10) && !Level::AtLeast(10).holds(9));
        assert_eq!(Level::Below(3100).shifted(-100), Level::Below(3000));
    }
}
