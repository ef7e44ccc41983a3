//! Packs read through the drivers join the bank and drive the outputs by the same rules as bus
//! batteries: a rig with the core's poller on one side and emulated packs on the other, the
//! clock jumping from deadline to deadline.

use bms_core::bus::BatteryModel;
use bms_core::drivers::emulator::{sample_pack, PackEmulator};
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, Protocol, MAX_REQUEST_LEN};
use bms_core::limits::BATTERY_LOST_MS;
use bms_core::protection::Reason;
use bms_core::{Bms, Config, Decisions, Inputs};

struct Rig {
    bms: Bms,
    poller: Poller,
    packs: Vec<PackEmulator>,
    now_ms: u64,
    series: u32,
    /// When each pack's last report reached the BMS, ms (by address - 1).
    last_report_ms: Vec<Option<u64>>,
    last: Decisions,
}

impl Rig {
    fn new(protocol: Protocol, cells: usize, count: u8, series: u32) -> Rig {
        let addresses: Vec<u8> = (1..=count).collect();
        let config = LineConfig::new(protocol, 0, &addresses).unwrap();
        Rig {
            bms: Bms::new(Config::default()),
            poller: Poller::new(config),
            packs: addresses
                .iter()
                .map(|&a| PackEmulator::new(protocol, a, sample_pack(protocol, cells, 3300)))
                .collect(),
            now_ms: 0,
            series,
            last_report_ms: vec![None; usize::from(count)],
            last: Decisions::default(),
        }
    }

    fn supply_mv(&self) -> u32 {
        let pack: u32 = self.packs[0]
            .data
            .cells_mv
            .iter()
            .map(|&c| u32::from(c))
            .sum();
        pack * self.series
    }

    /// Runs the line and the BMS until `end_ms`.
    fn run_until(&mut self, end_ms: u64) {
        while self.now_ms < end_ms {
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let len = self.poller.poll(self.now_ms, &mut tx);
            if len > 0 {
                let mut wire = Vec::new();
                for pack in &mut self.packs {
                    pack.answer(&tx[..len], |f| wire.extend_from_slice(f));
                }
                let (now, bms, last) = (self.now_ms, &mut self.bms, &mut self.last_report_ms);
                self.poller.receive(now, &wire, |r| {
                    if bms.handle_report(now, &r.report).is_ok() {
                        last[usize::from(r.address) - 1] = Some(now);
                    }
                });
            }
            let supply_mv = self.supply_mv();
            self.last = self.bms.step(
                self.now_ms,
                &Inputs {
                    remote_h_mv: supply_mv / 2,
                    remote_l_mv: supply_mv / 2,
                    supply_mv,
                    app_connected: false,
                },
            );
            let next = [
                self.poller.next_deadline_ms(),
                self.bms.next_deadline_ms(),
                Some(self.now_ms + u64::from(self.last.tick_ms)),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
            self.now_ms = next.clamp(self.now_ms + 1, end_ms.max(self.now_ms + 1));
        }
    }
}

/// BANK-1: a JBD 4-cell pack is a 12.8 V battery; two in series make a 25.6 V bank.
#[test]
fn bank_1_topology_comes_from_what_the_packs_report() {
    for (protocol, cells, count, series, model) in [
        (Protocol::Jbd, 4, 1, 1, BatteryModel::Lfp12V8),
        (Protocol::Jk, 16, 3, 1, BatteryModel::Lfp51V2),
        (Protocol::Daly, 8, 4, 2, BatteryModel::Lfp25V6),
    ] {
        let mut rig = Rig::new(protocol, cells, count, series);
        rig.run_until(8_000);
        let t = rig.bms.bank().topology().unwrap();
        assert_eq!(t.model, model, "{protocol}");
        assert_eq!(t.batteries, count, "{protocol}");
        assert_eq!(t.series, series as u8, "{protocol}");
        assert!(rig.last.atd && rig.last.atc, "{protocol}: outputs high");
    }
}

/// BANK-4: a pack that stops answering is lost exactly 5 s after its last valid report, and
/// both outputs go free-floating then, not before.
#[test]
fn bank_4_a_silent_pack_is_lost_exactly_5_s_after_its_last_report() {
    for protocol in [Protocol::Jbd, Protocol::Jk, Protocol::Daly] {
        let count = if protocol == Protocol::Jbd { 1 } else { 3 };
        let mut rig = Rig::new(protocol, 4, count, 1);
        rig.run_until(10_000);
        assert!(rig.last.atd && rig.last.atc, "{protocol}");
        let silent = usize::from(count) - 1;
        rig.packs[silent].silent = true;
        let last = rig.last_report_ms[silent].unwrap();
        rig.run_until(last + BATTERY_LOST_MS - 1);
        assert!(
            rig.last.atd && rig.last.atc,
            "{protocol}: not lost before 5 s"
        );
        rig.run_until(last + BATTERY_LOST_MS + 1);
        assert!(!rig.last.atd && !rig.last.atc, "{protocol}: lost at 5 s");
        assert!(rig.last.atd_reasons.contains(Reason::BatteryLost));
        let battery = rig.bms.bank().batteries().iter().find(|b| b.lost).unwrap();
        assert_eq!(battery.last_valid_ms(), last, "{protocol}");
        // Back: the next round reads it again and the outputs return.
        rig.packs[silent].silent = false;
        rig.run_until(last + BATTERY_LOST_MS + 4_000);
        assert!(rig.last.atd && rig.last.atc, "{protocol}: back");
    }
}

/// PROT-13: a pack's implausible reading (a 0 V or 5.5 V cell, 151 °C) takes the same path as
/// a bus battery's: refused and ignored like a missing report, so one bad round switches no
/// output, and a pack that keeps reading so is lost 5 s after its last valid report.
#[test]
fn prot_13_a_packs_implausible_reading_is_ignored_like_a_missing_one() {
    for protocol in [Protocol::Jbd, Protocol::Jk, Protocol::Daly] {
        for bad in 0..3 {
            let mut rig = Rig::new(protocol, 4, 1, 1);
            rig.run_until(8_000);
            assert!(rig.last.atd && rig.last.atc, "{protocol}");
            let good = rig.packs[0].data.clone();
            match bad {
                0 => rig.packs[0].data.cells_mv[1] = 0,
                1 => rig.packs[0].data.cells_mv[2] = 5500,
                _ => rig.packs[0].data.temps_ddegc[0] = 1510,
            }
            let last = rig.last_report_ms[0].unwrap();
            let refused = rig.bms.invalid_reports();
            rig.run_until(last + BATTERY_LOST_MS - 1);
            assert!(
                rig.bms.invalid_reports() > refused,
                "{protocol} {bad}: refused"
            );
            assert!(
                rig.last.atd && rig.last.atc,
                "{protocol} {bad}: no output moves"
            );
            rig.run_until(last + BATTERY_LOST_MS + 1);
            assert!(
                !rig.last.atd && !rig.last.atc,
                "{protocol} {bad}: lost at 5 s"
            );
            assert!(rig.last.atd_reasons.contains(Reason::BatteryLost));
            rig.packs[0].data = good;
            rig.run_until(last + BATTERY_LOST_MS + 4_000);
            assert!(rig.last.atd && rig.last.atc, "{protocol} {bad}: back");
        }
    }
}

/// PROT-7: a pack's own switch states are its charge/discharge-allowed flags.
#[test]
fn prot_7_a_packs_own_switches_block_charge_and_discharge() {
    for protocol in [Protocol::Jbd, Protocol::Jk, Protocol::Daly] {
        let mut rig = Rig::new(protocol, 4, 1, 1);
        rig.run_until(8_000);
        assert!(rig.last.atc && rig.last.atd, "{protocol}");
        rig.packs[0].data.charge_allowed = false;
        rig.run_until(11_000);
        assert!(!rig.last.atc && rig.last.atd, "{protocol}");
        assert!(rig
            .last
            .atc_reasons
            .contains(Reason::BatteryChargeNotAllowed));
        rig.packs[0].data.discharge_allowed = false;
        rig.run_until(14_000);
        assert!(!rig.last.atd, "{protocol}");
        assert!(rig
            .last
            .atd_reasons
            .contains(Reason::BatteryDischargeNotAllowed));
        rig.packs[0].data.charge_allowed = true;
        rig.packs[0].data.discharge_allowed = true;
        rig.run_until(20_000);
        assert!(rig.last.atc && rig.last.atd, "{protocol}");
    }
}

/// A pack that sleeps through the first request joins at the second.
#[test]
fn a_sleeping_jbd_pack_joins_on_the_second_request() {
    let mut rig = Rig::new(Protocol::Jbd, 4, 1, 1);
    rig.packs[0].asleep = true;
    rig.run_until(1_000);
    assert_eq!(rig.poller.stats().retries, 1);
    assert_eq!(rig.bms.bank().batteries().len(), 1);
}
