//! DFU-1: the post-update self-check that decides whether MCUboot keeps a new image.

mod control_harness;

use bms_core::bms::{SelfCheck, SelfCheckInputs};
use bms_core::bus::BatteryModel;
use bms_core::limits::{SELF_CHECK_BUS_WAIT_MS, SELF_CHECK_STEPS, SELF_CHECK_TIMEOUT_MS};
use bms_core::node::Node;
use bms_core::Inputs;
use control_harness::{report, Flash, Rig};

const HEALTHY: SelfCheckInputs = SelfCheckInputs {
    ble_ready: true,
    storage_ok: true,
};

/// A new image starting: the device's control loop (persisting after each step) and the
/// platform's view for the self-check, which is asked after every step as the firmware does.
struct Image {
    rig: Rig<Node<Flash>>,
    platform: SelfCheckInputs,
    /// (time, verdict) after each step.
    verdicts: Vec<(u64, SelfCheck)>,
}

impl Image {
    fn start(rig: Rig<Node<Flash>>) -> Image {
        Image {
            rig,
            platform: HEALTHY,
            verdicts: Vec::new(),
        }
    }

    fn with_batteries() -> Image {
        Image::start(Rig::device(1, 1, BatteryModel::Lfp12V8))
    }

    /// Steps (persisting and asking for the verdict after each) until `ms` have passed.
    fn run_for(&mut self, ms: u64) -> SelfCheck {
        let end = self.rig.now_ms + ms;
        while self.rig.now_ms < end {
            if self.verdicts.is_empty() {
                self.rig.step();
            } else {
                self.rig.advance();
            }
            let now = self.rig.now_ms;
            let verdict = self.rig.bms.self_check(now, self.platform);
            self.verdicts.push((now, verdict));
        }
        self.verdict()
    }

    fn verdict(&self) -> SelfCheck {
        self.verdicts.last().map_or(SelfCheck::Pending, |v| v.1)
    }

    /// When the verdict first became `verdict`.
    fn first(&self, verdict: SelfCheck) -> Option<u64> {
        self.verdicts
            .iter()
            .find(|(_, v)| *v == verdict)
            .map(|(t, _)| *t)
    }
}

/// DFU-1: a healthy image (bank valid, store writable, Bluetooth up) passes once the control
/// loop has run its steps, not before; the verdict is final.
#[test]
fn dfu_1_healthy_image_passes_after_its_steps() {
    let mut image = Image::with_batteries();
    assert_eq!(image.run_for(1_000), SelfCheck::Pending);
    assert_eq!(image.run_for(10_000), SelfCheck::Passed);
    let passed_at = image.first(SelfCheck::Passed).unwrap();
    let steps_before = image
        .verdicts
        .iter()
        .filter(|(t, _)| *t < passed_at)
        .count();
    assert!(steps_before + 1 >= SELF_CHECK_STEPS as usize);
    assert!(
        passed_at < SELF_CHECK_BUS_WAIT_MS,
        "no need to wait for an empty bus"
    );
    // Final: later trouble does not take it back.
    image.platform.ble_ready = false;
    image.rig.silence(0, true);
    assert_eq!(image.run_for(SELF_CHECK_TIMEOUT_MS), SelfCheck::Passed);
}

/// DFU-1: without Bluetooth (the only way to update again) the image is never confirmed: it
/// fails at the time limit, and the failure is final.
#[test]
fn dfu_1_bluetooth_down_fails_at_the_time_limit() {
    let mut image = Image::with_batteries();
    image.platform.ble_ready = false;
    assert_eq!(
        image.run_for(SELF_CHECK_TIMEOUT_MS - 1_000),
        SelfCheck::Pending
    );
    assert_eq!(image.run_for(2_000), SelfCheck::Failed);
    let failed_at = image.first(SelfCheck::Failed).unwrap();
    assert!((SELF_CHECK_TIMEOUT_MS..SELF_CHECK_TIMEOUT_MS + 1_000).contains(&failed_at));
    image.platform.ble_ready = true;
    assert_eq!(image.run_for(1_000), SelfCheck::Failed);
}

/// DFU-1 (choice): no battery on the bus at all is no firmware fault (a bench, a new
/// installation): the image passes once it has waited for the first report.
#[test]
fn dfu_1_no_battery_connected_passes_after_the_bus_wait() {
    let mut image = Image::start(Rig::device(0, 1, BatteryModel::Lfp12V8));
    image.rig.supply_mv = Some(13_200);
    assert_eq!(image.run_for(20_000), SelfCheck::Passed);
    let passed_at = image.first(SelfCheck::Passed).unwrap();
    assert!(
        (SELF_CHECK_BUS_WAIT_MS..SELF_CHECK_BUS_WAIT_MS + 1_000).contains(&passed_at),
        "passed at {passed_at}"
    );
}

/// DFU-1: batteries that report but never make a valid bank (an image that mis-decodes the
/// bus) keep the image from being confirmed: it fails at the time limit.
#[test]
fn dfu_1_reports_that_never_make_a_valid_bank_fail() {
    let mut rig = Rig::device(1, 1, BatteryModel::Lfp12V8);
    rig.set_cells(0);
    let mut image = Image::start(rig);
    assert_eq!(
        image.run_for(SELF_CHECK_TIMEOUT_MS + 1_000),
        SelfCheck::Failed
    );
    assert_eq!(image.first(SelfCheck::Passed), None);
}

/// DFU-1: a store that is down or cannot be written fails the image.
#[test]
fn dfu_1_storage_down_or_unwritable_fails() {
    let mut image = Image::with_batteries();
    image.rig.bms.storage_mut().fail_writes = true;
    assert_eq!(
        image.run_for(SELF_CHECK_TIMEOUT_MS + 1_000),
        SelfCheck::Failed
    );

    let mut image = Image::with_batteries();
    image.platform.storage_ok = false;
    assert_eq!(
        image.run_for(SELF_CHECK_TIMEOUT_MS + 1_000),
        SelfCheck::Failed
    );
    assert_eq!(image.first(SelfCheck::Passed), None);
}

/// DFU-1: the control loop must keep stepping: with a valid bank, a written store and
/// Bluetooth up, an image whose loop stalls after a few steps fails at the time limit, while
/// the same image stepping once a second passes at its 20th step.
#[test]
fn dfu_1_a_control_loop_that_stops_stepping_fails() {
    for stalls in [true, false] {
        let mut random = |out: &mut [u8]| {
            out.fill(0x5A);
            true
        };
        let mut bms = Node::open(Flash::default(), &mut random);
        let mut verdict = SelfCheck::Pending;
        let mut t = 0;
        while t <= SELF_CHECK_TIMEOUT_MS + 1_000 && verdict == SelfCheck::Pending {
            if !stalls || t <= 4_000 {
                assert!(bms.handle_report(t, &report(1000, BatteryModel::Lfp12V8, 3300)));
                let inputs = Inputs {
                    remote_h_mv: 6_600,
                    remote_l_mv: 6_600,
                    supply_mv: 13_200,
                    app_connected: false,
                };
                let d = bms.step(t, &inputs);
                if t >= 3_000 {
                    assert!(d.atd, "bank valid");
                }
            }
            verdict = bms.self_check(t, HEALTHY);
            t += 1_000;
        }
        if stalls {
            assert_eq!(verdict, SelfCheck::Failed);
            assert_eq!(t - 1_000, SELF_CHECK_TIMEOUT_MS);
        } else {
            assert_eq!(verdict, SelfCheck::Passed);
            assert_eq!(t - 1_000, u64::from(SELF_CHECK_STEPS - 1) * 1_000);
        }
    }
}

/// DFU-1: bytes on the bus that never decode into a report (an image that cannot read the
/// bus: wrong speed, broken codec) are not "no battery connected": the image is not confirmed.
#[test]
fn dfu_1_bus_bytes_that_never_decode_fail() {
    let mut image = Image::start(Rig::device(0, 1, BatteryModel::Lfp12V8));
    image.rig.supply_mv = Some(13_200);
    let mut verdict = SelfCheck::Pending;
    while verdict == SelfCheck::Pending && image.rig.now_ms <= SELF_CHECK_TIMEOUT_MS + 1_000 {
        let now = image.rig.now_ms;
        // Line noise: bytes arrive, no frame ever checks out.
        let _ = image
            .rig
            .bms
            .feed_bus(now, &[0x13, 0x37, 0xA5, 0x00, 0x5A, 0x00]);
        verdict = image.run_for(1_000);
    }
    assert_eq!(verdict, SelfCheck::Failed);
    assert_eq!(image.first(SelfCheck::Passed), None);
}
