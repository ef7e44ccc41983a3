//! A test rig for the control path: a fake bank of batteries reporting once a second, the
//! BMS's own inputs, and a clock that jumps from deadline to deadline (it never sleeps).
#![allow(dead_code)]

use bms_core::bus::{BatteryFlags, BatteryModel, BatteryReport};
use bms_core::node::Node;
use bms_core::storage::{MemStorage, Storage, StorageError};
use bms_core::{Bms, Config, Decisions, Inputs};
use heapless::Vec;

/// How often each fake battery reports, ms.
pub const REPORT_PERIOD_MS: u64 = 1000;

/// A report of `model` with every cell at `cell_mv` and one sensor at 25 °C.
pub fn report(serial: u32, model: BatteryModel, cell_mv: u16) -> BatteryReport {
    BatteryReport {
        serial,
        model,
        capacity_dah: 1000,
        firmware: 0x0112,
        cells_mv: Vec::from_slice(&[cell_mv; 16][..model.cells()]).unwrap(),
        temps_ddegc: Vec::from_slice(&[250]).unwrap(),
        current_ma: 0,
        flags: BatteryFlags {
            allowed_to_charge: true,
            allowed_to_discharge: true,
            balancing: false,
        },
    }
}

/// Remote wiring seen by the BMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    /// Wire loop between L and H (both at the same voltage).
    Loop,
    /// Nothing connected: H pulled down, L pulled up.
    Open,
}

/// One step's result with its time.
#[derive(Clone, Debug)]
pub struct Record {
    pub at_ms: u64,
    /// The BMS's own inputs of this step.
    pub inputs: Inputs,
    /// How long the longest-silent battery has been silent at this step, ms.
    pub longest_silence_ms: u64,
    pub decisions: Decisions,
}

/// What a rig drives: the bare core (most tests), or a whole device ([`Node`]) that also
/// persists (the persistence tests).
pub trait Core {
    /// A battery report at `now_ms`.
    fn report(&mut self, now_ms: u64, report: &BatteryReport);
    /// One control step.
    fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions;
    /// The core's next deadline.
    fn next_deadline_ms(&self) -> Option<u64>;
    /// The core, for reading its state.
    fn core(&self) -> &Bms;
}

impl Core for Bms {
    fn report(&mut self, now_ms: u64, report: &BatteryReport) {
        let _ = self.handle_report(now_ms, report);
    }
    fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions {
        Bms::step(self, now_ms, inputs)
    }
    fn next_deadline_ms(&self) -> Option<u64> {
        Bms::next_deadline_ms(self)
    }
    fn core(&self) -> &Bms {
        self
    }
}

impl<S: Storage> Core for Node<S> {
    fn report(&mut self, now_ms: u64, report: &BatteryReport) {
        let _ = self.handle_report(now_ms, report);
    }
    fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions {
        Node::step(self, now_ms, inputs)
    }
    fn next_deadline_ms(&self) -> Option<u64> {
        Node::next_deadline_ms(self)
    }
    fn core(&self) -> &Bms {
        self.bms()
    }
}

pub struct Rig<C: Core = Bms> {
    pub bms: C,
    pub now_ms: u64,
    /// The reports the batteries send (each every [`REPORT_PERIOD_MS`], while `silent` is false).
    pub batteries: std::vec::Vec<(BatteryReport, bool)>,
    silent_since: std::vec::Vec<Option<u64>>,
    pub series: u32,
    pub remote: Remote,
    pub app_connected: bool,
    /// Override of the supply voltage (otherwise series × first battery's voltage).
    pub supply_mv: Option<u32>,
    next_report_ms: u64,
    pub records: std::vec::Vec<Record>,
}

impl Rig {
    /// `count` batteries of `model`, `series` of them in series, all cells at 3300 mV.
    pub fn new(count: u32, series: u32, model: BatteryModel) -> Rig {
        Rig::with_config(count, series, model, Config::default())
    }

    pub fn with_config(count: u32, series: u32, model: BatteryModel, config: Config) -> Rig {
        Rig::with_core(count, series, model, Bms::new(config))
    }

    /// One 12.8 V battery.
    pub fn single() -> Rig {
        Rig::new(1, 1, BatteryModel::Lfp12V8)
    }

    /// A rig already past discovery with outputs on (3 s of healthy data).
    pub fn started() -> Rig {
        let mut rig = Rig::single();
        rig.run_for(3000);
        assert!(
            rig.last().atd && rig.last().atc,
            "healthy bank must switch on"
        );
        rig
    }
}

impl Rig<Node<Flash>> {
    /// A whole device over an empty flash (its random source gives 0x5A bytes).
    pub fn device(count: u32, series: u32, model: BatteryModel) -> Rig<Node<Flash>> {
        let mut random = |out: &mut [u8]| {
            out.fill(0x5A);
            true
        };
        let node = Node::open(Flash::default(), &mut random);
        Rig::with_core(count, series, model, node)
    }
}

impl<C: Core> Rig<C> {
    /// The rig around `core`.
    pub fn with_core(count: u32, series: u32, model: BatteryModel, core: C) -> Rig<C> {
        Rig {
            bms: core,
            now_ms: 0,
            batteries: (0..count)
                .map(|i| (report(1000 + i, model, 3300), false))
                .collect(),
            silent_since: std::vec::Vec::new(),
            series,
            remote: Remote::Loop,
            app_connected: false,
            supply_mv: None,
            next_report_ms: 0,
            records: std::vec::Vec::new(),
        }
    }

    pub fn inputs(&self) -> Inputs {
        let vbat = self.supply_mv.unwrap_or_else(|| {
            let battery: u32 = self
                .batteries
                .first()
                .map_or(0, |(r, _)| r.cells_mv.iter().map(|&c| u32::from(c)).sum());
            battery * self.series
        });
        let (remote_h_mv, remote_l_mv) = match self.remote {
            Remote::Loop => (vbat / 2, vbat / 2),
            Remote::Open => (0, 5000),
        };
        Inputs {
            remote_h_mv,
            remote_l_mv,
            supply_mv: vbat,
            app_connected: self.app_connected,
        }
    }

    /// Sets every cell of every battery to `cell_mv`.
    pub fn set_cells(&mut self, cell_mv: u16) {
        for (r, _) in &mut self.batteries {
            for c in r.cells_mv.iter_mut() {
                *c = cell_mv;
            }
        }
    }

    /// Sets one cell.
    pub fn set_cell(&mut self, battery: usize, cell: usize, cell_mv: u16) {
        self.batteries[battery].0.cells_mv[cell] = cell_mv;
    }

    /// Sets the temperature of every battery.
    pub fn set_temp(&mut self, temp_ddegc: i16) {
        for (r, _) in &mut self.batteries {
            r.temps_ddegc = Vec::from_slice(&[temp_ddegc]).unwrap();
        }
    }

    /// Sets the current of every battery.
    pub fn set_current(&mut self, current_ma: i32) {
        for (r, _) in &mut self.batteries {
            r.current_ma = current_ma;
        }
    }

    /// Makes battery `index` stop (or resume) reporting.
    pub fn silence(&mut self, index: usize, silent: bool) {
        if self.silent_since.len() < self.batteries.len() {
            self.silent_since.resize(self.batteries.len(), None);
        }
        if silent && !self.batteries[index].1 {
            self.silent_since[index] = Some(self.now_ms);
        } else if !silent {
            self.silent_since[index] = None;
        }
        self.batteries[index].1 = silent;
    }

    /// The decisions of the latest step.
    pub fn last(&self) -> &Decisions {
        &self.records.last().expect("no step yet").decisions
    }

    /// Steps once at the current time (sending due reports first).
    pub fn step(&mut self) -> &Decisions {
        if self.now_ms >= self.next_report_ms {
            for (r, silent) in &self.batteries {
                if !*silent {
                    self.bms.report(self.now_ms, r);
                }
            }
            self.next_report_ms = self.now_ms + REPORT_PERIOD_MS;
        }
        let inputs = self.inputs();
        let decisions = self.bms.step(self.now_ms, &inputs);
        let longest_silence_ms = self
            .silent_since
            .iter()
            .flatten()
            .map(|&since| self.now_ms - since)
            .max()
            .unwrap_or(0);
        self.records.push(Record {
            at_ms: self.now_ms,
            inputs,
            longest_silence_ms,
            decisions,
        });
        self.last()
    }

    /// A full charge (MON-2 synchronisation: 3.60 V cells, tail current) with the cells equal,
    /// then the bank resting at 3.40 V: the balancer has judged it Balanced.
    pub fn full_charge(&mut self) {
        self.set_cells(3600);
        self.set_current(100);
        self.run_for(4 * 60_000);
        assert_eq!(
            self.bms.core().balancer(),
            bms_core::balancer::BalancerState::Balanced
        );
        self.set_cells(3400);
        self.set_current(0);
        self.run_for(1000);
    }

    /// Jumps to the next deadline (or report), then steps.
    pub fn advance(&mut self) -> &Decisions {
        let deadline = self.bms.next_deadline_ms().unwrap_or(self.now_ms + 100);
        let next = deadline.min(self.next_report_ms).max(self.now_ms + 1);
        self.now_ms = next;
        self.step()
    }

    /// Steps now, then advances until `ms` more have passed.
    pub fn run_for(&mut self, ms: u64) -> &Decisions {
        let end = self.now_ms + ms;
        if self.records.last().is_none_or(|r| r.at_ms != self.now_ms) {
            self.step();
        }
        while self.now_ms < end {
            let deadline = self.bms.next_deadline_ms().unwrap_or(self.now_ms + 100);
            let next = deadline
                .min(self.next_report_ms)
                .min(end)
                .max(self.now_ms + 1);
            self.now_ms = next;
            self.step();
        }
        self.last()
    }

    /// Advances until `cond` holds for the latest decisions; returns the time it first held.
    pub fn run_until(&mut self, max_ms: u64, cond: impl Fn(&Decisions) -> bool) -> Option<u64> {
        let end = self.now_ms + max_ms;
        if cond(self.step()) {
            return Some(self.now_ms);
        }
        while self.now_ms < end {
            if cond(self.advance()) {
                return Some(self.now_ms);
            }
        }
        None
    }
}

/// A flash whose writes can be made to fail, as a worn or disconnected flash would.
#[derive(Default)]
pub struct Flash {
    /// What the flash holds; survives a simulated reboot.
    pub inner: MemStorage,
    /// Every write fails with an I/O error while set.
    pub fail_writes: bool,
}

impl Storage for Flash {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        self.inner.read(key, buf)
    }
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        if self.fail_writes {
            return Err(StorageError::Io { code: -5 });
        }
        self.inner.write(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
}
