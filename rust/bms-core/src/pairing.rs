//! Who may pair and who is paired (BLE-2 rev 2): the pairing window, the back-off after failed
//! attempts, the board's button, the lock after a secrets fault, and the bonds the BLE stack
//! holds.
//!
//! In: the time, the button's edges, the result of each pairing attempt, the bonds the platform
//! reports. Out: whether a new pairing is allowed now ([`Pairing::allowed`]), what a button press
//! asks for ([`ButtonAction`]), and when something changes next ([`Pairing::next_deadline_ms`]).
//! The bonds themselves live in the BLE stack; what to do with them goes out as a
//! [`BondAction`] the platform carries out (the core decides, the stack executes).
//!
//! Rules (named thresholds in [`crate::limits`]):
//! - new pairings only while a window is open: [`PAIRING_WINDOW_MS`] after a press of the
//!   button, or after power-up while no bond exists;
//! - each failed attempt closes pairing for a back-off that doubles with every failure in a row
//!   ([`PAIRING_BACKOFF_FIRST_MS`], at most [`PAIRING_BACKOFF_MAX_MS`]); the count survives new
//!   windows and clears only at a successful pairing, a reset or a new passkey (the back-off
//!   guards the bits of the passkey tried), so a nearby attacker gets a few guesses per press of
//!   the owner's button, never a stream of them;
//! - a successful pairing closes the window (one new phone per press);
//! - every failed attempt tells the peer some of the passkey's bits, and nothing makes it
//!   forget them: after [`PASSKEY_MAX_FAILED_ATTEMPTS`] failures against one passkey it is worn
//!   ([`Pairing::passkey_worn`]), and the next press of the button comes with a new one; the
//!   count is stored with the passkey (a restart does not clear it), and a worn passkey opens
//!   no power-up window (a restart would otherwise give a guesser new attempts against it);
//! - a completed pairing wears the passkey at once: LE Secure Connections passkey entry opens
//!   the commitment of each of its 20 rounds in clear, so whoever recorded the pairing has
//!   every bit: a passkey is good for one pairing;
//! - after a fault in the stored secrets nothing pairs until the button is held for
//!   [`PAIRING_RESET_HOLD_MS`] (reset pairing: every bond removed, a new passkey).

use core::fmt;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::{
    BUTTON_PRESS_MIN_MS, MAX_BONDS, PAIRING_BACKOFF_FIRST_MS, PAIRING_BACKOFF_MAX_MS,
    PAIRING_RESET_HOLD_MS, PAIRING_WINDOW_MS, PASSKEY_MAX_FAILED_ATTEMPTS,
};

/// One bond of the BLE stack: the peer's identity address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bond {
    /// 0 public, 1 random (static) identity address, as Zephyr's `bt_addr_le_t.type`.
    pub address_type: u8,
    /// The address, least significant byte first (as `bt_addr_t`).
    pub address: [u8; 6],
}

/// The bonds the BLE stack holds, as it last reported them.
pub type Bonds = Vec<Bond, MAX_BONDS>;

/// What the platform must do with the BLE stack's bonds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BondAction {
    /// Remove every bond (reset pairing).
    RemoveAll,
    /// Remove every bond but the one of the link that asked (a passkey change).
    RemoveOthers,
    /// Remove this bond (the RemoveBond command).
    Remove(Bond),
}

/// What a press of the button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ButtonAction {
    /// A press: the pairing window opens and the passkey is shown.
    OpenWindow,
    /// Held for [`PAIRING_RESET_HOLD_MS`]: reset pairing (every bond removed, a new passkey).
    ResetPairing,
}

/// Why a new pairing is refused now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingRefusal {
    /// The stored secrets are faulty or missing: nothing pairs until the reset (button held).
    Locked,
    /// No pairing window is open.
    WindowClosed,
    /// A failed attempt was less than the back-off ago; pairing opens again at `until_ms`.
    BackOff {
        /// When the back-off ends, ms.
        until_ms: u64,
    },
}

impl fmt::Display for PairingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PairingRefusal::Locked => "secrets faulty: hold the button to reset pairing",
            PairingRefusal::WindowClosed => "no pairing window: press the button",
            PairingRefusal::BackOff { .. } => "back-off after a failed pairing",
        })
    }
}

/// The pairing state machine (see the module documentation). Fixed size, no heap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    locked: bool,
    /// The window opened at power-up closes then (it counts only while no bond exists).
    power_up_until_ms: Option<u64>,
    /// The window opened by the button closes then.
    button_until_ms: Option<u64>,
    /// Failed attempts in a row.
    failures: u32,
    /// Failed attempts against the passkey in force, whatever succeeded in between.
    failures_on_passkey: u32,
    /// No attempt is allowed before this time.
    backoff_until_ms: u64,
    /// The button went down at this time and is still down.
    button_down_ms: Option<u64>,
    bonds: Bonds,
}

impl Pairing {
    /// The state at power-up (`now_ms`): the power-up window opens (it counts while no bond is
    /// reported); `locked` after a secrets fault.
    pub fn new(now_ms: u64, locked: bool) -> Pairing {
        Pairing {
            locked,
            power_up_until_ms: Some(now_ms.saturating_add(PAIRING_WINDOW_MS)),
            ..Pairing::default()
        }
    }

    /// Whether a new pairing may start at `now_ms`.
    pub fn allowed(&self, now_ms: u64) -> Result<(), PairingRefusal> {
        if self.locked {
            return Err(PairingRefusal::Locked);
        }
        if now_ms < self.backoff_until_ms {
            return Err(PairingRefusal::BackOff {
                until_ms: self.backoff_until_ms,
            });
        }
        let open = |until: Option<u64>| until.is_some_and(|until| now_ms < until);
        let power_up_open =
            self.bonds.is_empty() && !self.passkey_worn() && open(self.power_up_until_ms);
        if open(self.button_until_ms) || power_up_open {
            Ok(())
        } else {
            Err(PairingRefusal::WindowClosed)
        }
    }

    /// A pairing attempt ended at `now_ms`: `success`, or failed (wrong passkey, cancelled,
    /// timed out). A failure starts the back-off; a success closes the window and clears it.
    pub fn attempt(&mut self, now_ms: u64, success: bool) {
        if success {
            self.failures = 0;
            self.backoff_until_ms = 0;
            self.button_until_ms = None;
            self.power_up_until_ms = None;
            // Passkey entry opens each round's commitment in clear: a completed pairing gave
            // every bit of the passkey to whoever listened. It is worn: the next press of the
            // button comes with a new one.
            self.failures_on_passkey = self.failures_on_passkey.max(PASSKEY_MAX_FAILED_ATTEMPTS);
            log::info!("pairing succeeded: window closed, the next one gets a new passkey");
        } else {
            self.failures = self.failures.saturating_add(1);
            self.failures_on_passkey = self.failures_on_passkey.saturating_add(1);
            let doublings = self.failures.saturating_sub(1).min(32);
            let backoff = PAIRING_BACKOFF_FIRST_MS
                .checked_shl(doublings)
                .unwrap_or(PAIRING_BACKOFF_MAX_MS)
                .min(PAIRING_BACKOFF_MAX_MS);
            self.backoff_until_ms = now_ms.saturating_add(backoff);
            log::warn!(
                "pairing failed ({} in a row): next attempt in {} s",
                crate::word::Number::from(self.failures),
                crate::word::Number::from(backoff / 1000)
            );
        }
    }

    /// The button went down (`pressed`) or up at `now_ms`. A press that lasted at least
    /// [`BUTTON_PRESS_MIN_MS`] opens the window ([`ButtonAction::OpenWindow`]); one that lasted
    /// [`PAIRING_RESET_HOLD_MS`] resets pairing ([`ButtonAction::ResetPairing`], which also
    /// unlocks after a secrets fault). Repeated edges in the same direction change nothing.
    pub fn button(&mut self, now_ms: u64, pressed: bool) -> Option<ButtonAction> {
        match (pressed, self.button_down_ms) {
            (true, None) => {
                self.button_down_ms = Some(now_ms);
                None
            }
            (false, Some(down_ms)) => {
                self.button_down_ms = None;
                let held_ms = now_ms.saturating_sub(down_ms);
                if held_ms >= PAIRING_RESET_HOLD_MS {
                    self.reset(now_ms);
                    Some(ButtonAction::ResetPairing)
                } else if held_ms >= BUTTON_PRESS_MIN_MS && !self.locked {
                    self.button_until_ms = Some(now_ms.saturating_add(PAIRING_WINDOW_MS));
                    Some(ButtonAction::OpenWindow)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether so many attempts failed against the passkey in force that it is to be replaced
    /// ([`PASSKEY_MAX_FAILED_ATTEMPTS`]).
    pub fn passkey_worn(&self) -> bool {
        self.failures_on_passkey >= PASSKEY_MAX_FAILED_ATTEMPTS
    }

    /// A new passkey is in force: no failed attempt has been made against it, and the back-off
    /// of the failures against the old one ends (it guarded bits of a passkey no longer in use;
    /// kept, it locked the owner out for up to [`PAIRING_BACKOFF_MAX_MS`] after the guesser had
    /// gone). Failures against the new one back off afresh.
    pub fn passkey_renewed(&mut self) {
        self.failures_on_passkey = 0;
        self.failures = 0;
        self.backoff_until_ms = 0;
    }

    /// Failed attempts against the passkey in force (stored with it).
    pub fn failures_on_passkey(&self) -> u32 {
        self.failures_on_passkey
    }

    /// The failed attempts against the passkey in force as stored with it (at start).
    pub fn set_failures_on_passkey(&mut self, failures: u32) {
        self.failures_on_passkey = failures;
    }

    /// Whether the button has been held long enough to reset pairing when it is released.
    pub fn reset_armed(&self, now_ms: u64) -> bool {
        self.button_down_ms
            .is_some_and(|down| now_ms.saturating_sub(down) >= PAIRING_RESET_HOLD_MS)
    }

    /// Locks pairing (a secrets fault found after start, or none usable).
    pub fn lock(&mut self) {
        self.locked = true;
    }

    /// True while a secrets fault keeps pairing locked.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The bonds the BLE stack holds now (at start, and after every change). More than
    /// [`MAX_BONDS`] keep the first ones.
    pub fn set_bonds(&mut self, bonds: &[Bond]) {
        self.bonds.clear();
        for bond in bonds.iter().take(MAX_BONDS) {
            let _ = self.bonds.push(*bond);
        }
    }

    /// The bonds as last reported.
    pub fn bonds(&self) -> &[Bond] {
        &self.bonds
    }

    /// Whether `bond` is one of the reported bonds.
    pub fn has_bond(&self, bond: &Bond) -> bool {
        self.bonds.contains(bond)
    }

    /// When [`Pairing::allowed`] or [`Pairing::reset_armed`] next changes, if it does.
    pub fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        [
            self.power_up_until_ms,
            self.button_until_ms,
            Some(self.backoff_until_ms),
            self.button_down_ms
                .map(|down| down.saturating_add(PAIRING_RESET_HOLD_MS)),
        ]
        .into_iter()
        .flatten()
        .filter(|&at| at > now_ms)
        .min()
    }

    fn reset(&mut self, now_ms: u64) {
        self.locked = false;
        self.failures = 0;
        self.failures_on_passkey = 0;
        self.backoff_until_ms = 0;
        self.bonds.clear();
        self.power_up_until_ms = None;
        self.button_until_ms = Some(now_ms.saturating_add(PAIRING_WINDOW_MS));
        log::warn!("pairing reset: every bond removed, new passkey");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: Bond = Bond {
        address_type: 0,
        address: [1, 2, 3, 4, 5, 6],
    };

    fn press(p: &mut Pairing, at: u64, held: u64) -> Option<ButtonAction> {
        assert_eq!(p.button(at, true), None);
        p.button(at + held, false)
    }

    /// BLE-2: after power-up with no bond, pairing is open for the window, then closed; with a
    /// bond it is closed from the start; a press of the button opens it for the window.
    #[test]
    fn ble_2_pairing_only_in_a_window() {
        let p = Pairing::new(1_000, false);
        assert_eq!(p.allowed(1_000), Ok(()));
        assert_eq!(p.allowed(1_000 + PAIRING_WINDOW_MS - 1), Ok(()));
        assert_eq!(
            p.allowed(1_000 + PAIRING_WINDOW_MS),
            Err(PairingRefusal::WindowClosed)
        );

        let mut bonded = Pairing::new(0, false);
        bonded.set_bonds(&[PHONE]);
        assert_eq!(bonded.allowed(10), Err(PairingRefusal::WindowClosed));
        assert_eq!(
            press(&mut bonded, 1_000, 200),
            Some(ButtonAction::OpenWindow)
        );
        assert_eq!(bonded.allowed(1_200), Ok(()));
        assert_eq!(
            bonded.allowed(1_200 + PAIRING_WINDOW_MS),
            Err(PairingRefusal::WindowClosed)
        );
        // A bounce shorter than a press does nothing.
        assert_eq!(press(&mut bonded, 900_000, BUTTON_PRESS_MIN_MS - 1), None);
        assert_eq!(bonded.allowed(900_100), Err(PairingRefusal::WindowClosed));
        // A success closes the window: one new phone per press.
        press(&mut bonded, 1_000_000, 100);
        bonded.attempt(1_000_200, true);
        assert_eq!(bonded.allowed(1_000_300), Err(PairingRefusal::WindowClosed));
    }

    /// BLE-2: every failed attempt doubles the back-off, which survives a new window; a
    /// success clears it. Attempts within one window stay few (a guessed passkey leaks about
    /// one bit per failure).
    #[test]
    fn ble_2_failed_pairings_back_off_exponentially() {
        // The button's window: the power-up one closes once the passkey is worn.
        let mut p = Pairing::new(0, false);
        p.set_bonds(&[PHONE]);
        assert_eq!(press(&mut p, 0, 100), Some(ButtonAction::OpenWindow));
        let mut now = 100;
        let mut attempts = 0;
        while now < 100 + PAIRING_WINDOW_MS {
            match p.allowed(now) {
                Ok(()) => {
                    attempts += 1;
                    p.attempt(now, false);
                }
                Err(PairingRefusal::BackOff { until_ms }) => now = until_ms,
                Err(other) => panic!("{other:?} at {now}"),
            }
        }
        assert!(
            (4..=7).contains(&attempts),
            "{attempts} attempts in a window"
        );
        // A new window does not reset the back-off.
        p.attempt(now, false);
        let before = p.backoff_until_ms;
        press(&mut p, now, 100);
        assert!(matches!(
            p.allowed(now + 100),
            Err(PairingRefusal::BackOff { .. })
        ));
        assert_eq!(p.backoff_until_ms, before);
        // At most the cap, however many failures.
        for _ in 0..100 {
            p.attempt(now, false);
        }
        assert_eq!(p.backoff_until_ms, now + PAIRING_BACKOFF_MAX_MS);
        p.attempt(now, true);
        assert_eq!(p.backoff_until_ms, 0);
    }

    /// BLE-2, secrets fault: locked pairing refuses even in a window, a press does not unlock;
    /// holding the button for the reset time unlocks, clears the bonds and opens the window.
    // BLE-2 (choice): failures against one passkey add up across windows; the passkey is worn
    // at PASSKEY_MAX_FAILED_ATTEMPTS and fresh again once renewed or reset. A completed pairing
    // wears it at once (its rounds opened every bit to whoever listened), and a success after
    // failures leaves it worn.
    #[test]
    fn ble_2_failures_against_one_passkey_wear_it() {
        let mut p = Pairing::new(0, false);
        for n in 0..PASSKEY_MAX_FAILED_ATTEMPTS {
            assert!(!p.passkey_worn(), "{n} failures");
            p.attempt(1_000 + u64::from(n) * PAIRING_BACKOFF_MAX_MS, false);
        }
        assert!(p.passkey_worn());
        p.passkey_renewed();
        assert!(!p.passkey_worn());
        p.attempt(2_000, true);
        assert!(p.passkey_worn(), "a completed pairing wears the passkey");
        p.passkey_renewed();
        p.attempt(2_500, false);
        p.attempt(2_600, true);
        assert!(p.passkey_worn(), "a success after a failure");
        p.passkey_renewed();
        assert!(!p.passkey_worn());
        for _ in 0..PASSKEY_MAX_FAILED_ATTEMPTS {
            p.attempt(3_000, false);
        }
        assert!(p.passkey_worn());
        assert!(p.button(10_000, true).is_none());
        assert_eq!(
            p.button(10_000 + PAIRING_RESET_HOLD_MS, false),
            Some(ButtonAction::ResetPairing)
        );
        assert!(!p.passkey_worn(), "a reset brings a new passkey");
    }

    /// BLE-2 (choice): a worn passkey (its failures restored after a restart) opens no
    /// power-up window: each restart would otherwise give a guesser a new window against the
    /// same passkey. The button's window still opens (the node renews the passkey then).
    #[test]
    fn ble_2_a_worn_passkey_opens_no_power_up_window() {
        let mut p = Pairing::new(0, false);
        p.set_failures_on_passkey(PASSKEY_MAX_FAILED_ATTEMPTS - 1);
        assert_eq!(p.allowed(10), Ok(()), "not worn yet");
        p.set_failures_on_passkey(PASSKEY_MAX_FAILED_ATTEMPTS);
        assert_eq!(p.allowed(10), Err(PairingRefusal::WindowClosed));
        assert_eq!(press(&mut p, 1_000, 200), Some(ButtonAction::OpenWindow));
        assert_eq!(p.allowed(1_300), Ok(()));
    }

    /// BLE-2: the next deadline is always after now: a deadline that is due has passed (one
    /// reported as now would wake the platform at once, forever), and none is left once the
    /// window closed.
    #[test]
    fn ble_2_next_deadline_is_after_now() {
        let p = Pairing::new(0, false);
        assert_eq!(p.next_deadline_ms(0), Some(PAIRING_WINDOW_MS));
        assert_eq!(
            p.next_deadline_ms(PAIRING_WINDOW_MS - 1),
            Some(PAIRING_WINDOW_MS)
        );
        assert_eq!(p.next_deadline_ms(PAIRING_WINDOW_MS), None);
    }

    #[test]
    fn ble_2_locked_until_the_button_is_held() {
        let mut p = Pairing::new(0, true);
        p.set_bonds(&[PHONE]);
        assert_eq!(p.allowed(0), Err(PairingRefusal::Locked));
        assert!(p.locked());
        assert_eq!(press(&mut p, 1_000, 500), None);
        assert_eq!(p.allowed(2_000), Err(PairingRefusal::Locked));
        assert_eq!(p.button(3_000, true), None);
        assert!(!p.reset_armed(3_000 + PAIRING_RESET_HOLD_MS - 1));
        assert_eq!(
            p.next_deadline_ms(3_000),
            Some(3_000 + PAIRING_RESET_HOLD_MS)
        );
        assert!(p.reset_armed(3_000 + PAIRING_RESET_HOLD_MS));
        let released = 3_000 + PAIRING_RESET_HOLD_MS + 10;
        assert_eq!(p.button(released, false), Some(ButtonAction::ResetPairing));
        assert!(!p.locked());
        assert!(p.bonds().is_empty());
        assert_eq!(p.allowed(released + 1), Ok(()));
    }
}
