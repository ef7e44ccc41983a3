//! The request handler: one GATT access in, one response out. It decodes and checks the
//! request completely before it calls a single mutating method of the [`Device`], so a refused
//! request never changes state.

use core::fmt;

use serde::Serialize;

use super::pages::{BankPage, BatteryPage, HistoryPage, SocPage, StatusPage};
use super::wire::{
    decode_command, decode_request, decode_settings, encode_response, Access, AdvertisementKey,
    BatterySelect, Bond, BondList, Characteristic, Command, ForgottenBatteries, ProtocolError,
    Refusal, Status, MAX_PASSKEY, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, MAX_SOC_PERMILLE, MIN_PASSKEY,
};
use crate::bms::Bms;
use crate::name::{DeviceName, NameError, NameText, MAX_NAME_LEN};
use crate::node::Random;
use crate::settings::{Settings, SettingsError};

/// Why an action could not be carried out. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// The action is not possible in the current state (e.g. no bank seen yet).
    NotAvailable,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::NotAvailable => f.write_str("action not available now"),
        }
    }
}

/// What the protocol reads from and does to the device. [`crate::Bms`] implements it; tests
/// and fuzz targets use fakes. Arguments reach the mutating methods already range-checked.
pub trait Device {
    /// The status page now.
    fn status_page(&self) -> StatusPage;
    /// The state-of-charge page now.
    fn soc_page(&self) -> SocPage;
    /// The bank page now.
    fn bank_page(&self) -> BankPage;
    /// The page of battery `number`, `None` when there is no such battery.
    fn battery_page(&self, number: u8) -> Option<BatteryPage>;
    /// The history page now.
    fn history_page(&self) -> HistoryPage;
    /// The current settings.
    fn settings(&self) -> Settings;
    /// Replace the settings (validated as a whole, SET-1) at `now_ms`.
    fn write_settings(&mut self, now_ms: u64, settings: Settings) -> Result<(), SettingsError>;
    /// Set the SoC (0–1000 ‰) at `now_ms` (MON-4).
    fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), ActionError>;
    /// Synchronise the SoC to 100 % at `now_ms` (MON-4).
    fn synchronise(&mut self, now_ms: u64) -> Result<(), ActionError>;
    /// Clear the history at `now_ms` (HIST-4).
    fn reset_history(&mut self, now_ms: u64);
    /// Restore the factory settings at `now_ms` (SET-4).
    fn reset_to_defaults(&mut self, now_ms: u64);
    /// Change the pairing passkey (1–999999) and remove every other bond; the firmware
    /// persists and applies it.
    fn change_passkey(&mut self, now_ms: u64, passkey: u32) -> Result<(), ActionError>;
    /// The Instant Readout key (BLE-3), `None` when the device has none of its own.
    fn advertisement_key(&self) -> Option<[u8; 16]>;
    /// BLE-2 **(choice)**: whether monitoring reads need an authenticated link.
    fn read_protection(&self) -> bool;
    /// BLE-2: turn read protection on or off.
    fn set_read_protection(&mut self, on: bool) -> Result<(), ActionError>;
    /// BLE-2: the bonds and the read protection.
    fn bond_list(&self) -> BondList;
    /// BLE-2: remove `bond` (refused when there is no such bond).
    fn remove_bond(&mut self, bond: Bond) -> Result<(), ActionError>;
    /// BANK-4: forget every lost battery; how many were forgotten.
    fn forget_lost_batteries(&mut self, now_ms: u64) -> u8;
    /// BLE-3: make a new Instant Readout key from the random source and return it.
    fn new_readout_key(&mut self) -> Result<[u8; 16], ActionError>;
    /// The device name (BLE-1).
    fn device_name(&self) -> DeviceName;
    /// Rename the device; the firmware persists it and advertises it.
    fn set_device_name(&mut self, now_ms: u64, name: DeviceName);
}

/// The [`Device`] every node serves ([`crate::node::Node::gatt`]): the [`Bms`], which holds
/// the settings and the device secrets, and the platform's random source for new keys.
pub struct BmsDevice<'a> {
    /// The BMS.
    pub bms: &'a mut Bms,
    /// The platform's random source (asked only for a new readout key).
    pub random: &'a mut dyn Random,
}

impl fmt::Debug for BmsDevice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmsDevice").field("bms", &self.bms).finish()
    }
}

impl Device for BmsDevice<'_> {
    fn status_page(&self) -> StatusPage {
        StatusPage::from_bms(self.bms)
    }

    fn soc_page(&self) -> SocPage {
        SocPage::from_bms(self.bms)
    }

    fn bank_page(&self) -> BankPage {
        BankPage::from_bank(self.bms.bank(), self.bms.balancer().into())
    }

    fn battery_page(&self, number: u8) -> Option<BatteryPage> {
        BatteryPage::from_bank(self.bms.bank(), number)
    }

    fn history_page(&self) -> HistoryPage {
        HistoryPage::from_history(self.bms.history())
    }

    fn settings(&self) -> Settings {
        *self.bms.settings()
    }

    fn write_settings(&mut self, _now_ms: u64, settings: Settings) -> Result<(), SettingsError> {
        self.bms.write_settings(settings)
    }

    fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), ActionError> {
        self.bms
            .set_soc(now_ms, soc_permille)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn synchronise(&mut self, now_ms: u64) -> Result<(), ActionError> {
        self.bms
            .synchronise(now_ms)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn reset_history(&mut self, _now_ms: u64) {
        self.bms.reset_history();
    }

    fn reset_to_defaults(&mut self, _now_ms: u64) {
        self.bms.factory_reset();
    }

    fn change_passkey(&mut self, _now_ms: u64, passkey: u32) -> Result<(), ActionError> {
        self.bms
            .set_passkey(passkey)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn advertisement_key(&self) -> Option<[u8; 16]> {
        self.bms.has_device_key().then(|| *self.bms.device_key())
    }

    fn read_protection(&self) -> bool {
        self.bms.read_protection()
    }

    fn set_read_protection(&mut self, on: bool) -> Result<(), ActionError> {
        self.bms
            .set_read_protection(on)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn bond_list(&self) -> BondList {
        let mut list = BondList {
            read_protection: self.bms.read_protection(),
            ..BondList::default()
        };
        for bond in self.bms.pairing().bonds() {
            let _ = list.bonds.push(*bond);
        }
        list
    }

    fn remove_bond(&mut self, bond: Bond) -> Result<(), ActionError> {
        self.bms
            .remove_bond(bond)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn forget_lost_batteries(&mut self, _now_ms: u64) -> u8 {
        u8::try_from(self.bms.forget_lost_batteries()).unwrap_or(u8::MAX)
    }

    fn new_readout_key(&mut self) -> Result<[u8; 16], ActionError> {
        let mut key = [0u8; 16];
        if !self.random.fill(&mut key) {
            log::error!("no random source: readout key kept");
            return Err(ActionError::NotAvailable);
        }
        self.bms
            .new_device_key(key)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn device_name(&self) -> DeviceName {
        *self.bms.device_name()
    }

    fn set_device_name(&mut self, _now_ms: u64, name: DeviceName) {
        self.bms.set_device_name(name);
    }
}

/// The outcome of [`handle_request`]: the response length and its status (also `resp[1]`),
/// which the firmware may map to an ATT error for writes, and what the request changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Reply {
    /// Bytes of the response written to the buffer.
    pub len: usize,
    /// The status sent.
    pub status: Status,
    /// The records the request changed: persist them now.
    pub changed: Changed,
}

/// Which persisted records a request changed (all false unless the status is [`Status::Ok`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The settings (settings write, reset to defaults).
    pub settings: bool,
    /// The monitor's SoC record (set SoC, synchronise).
    pub soc: bool,
    /// The history (reset history).
    pub history: bool,
    /// The [`crate::secrets::DeviceSecrets`] (passkey change, new readout key, read
    /// protection): persist them and apply the passkey.
    pub secrets: bool,
    /// The device name: persist it and advertise it.
    pub name: bool,
}

/// Handle one GATT access to `characteristic` (a [`Characteristic`] number) at `now_ms` and
/// write the response to `resp`, which must hold [`MAX_RESPONSE_LEN`] bytes.
///
/// `authenticated` is whether the link is encrypted with an authenticated (passkey) key: writes
/// of settings and every control-point action are refused with
/// [`Status::NotAuthenticated`] otherwise (BLE-2). Every request gets a response; a refused one
/// changes nothing (BLE-4). For the Battery characteristic, a read passes the selector the
/// client last wrote on this connection (empty = battery 0) and a write passes the new
/// selector: both answer with the page, so the firmware keeps the selector only on
/// [`Status::Ok`].
pub fn handle_request<D: Device>(
    device: &mut D,
    now_ms: u64,
    characteristic: u8,
    access: Access,
    authenticated: bool,
    req: &[u8],
    resp: &mut [u8],
) -> Result<Reply, ProtocolError> {
    if resp.len() < MAX_RESPONSE_LEN {
        return Err(ProtocolError::BufferTooSmall {
            required: MAX_RESPONSE_LEN,
        });
    }
    match dispatch(
        device,
        now_ms,
        characteristic,
        access,
        authenticated,
        req,
        resp,
    ) {
        Ok(reply) => Ok(reply),
        Err(Refused::Status(status)) => respond(status, None::<&()>, resp),
        Err(Refused::Value(refusal)) => respond(Status::InvalidValue, Some(&refusal), resp),
    }
}

enum Refused {
    Status(Status),
    Value(Refusal),
}

impl From<Status> for Refused {
    fn from(status: Status) -> Refused {
        Refused::Status(status)
    }
}

fn dispatch<D: Device>(
    device: &mut D,
    now_ms: u64,
    characteristic: u8,
    access: Access,
    authenticated: bool,
    req: &[u8],
    resp: &mut [u8],
) -> Result<Reply, Refused> {
    let chr = Characteristic::from_u8(characteristic).ok_or(Status::UnknownCharacteristic)?;
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized.into());
    }
    // BLE-2 (choice): with read protection on, every access needs the authenticated link
    // writes need, except reading the device name, which is advertised anyway (BLE-1). Open is
    // the exception, so that a characteristic added later is closed too.
    let open_anyway = (chr, access) == (Characteristic::DeviceName, Access::Read);
    if !open_anyway && device.read_protection() && !authenticated {
        return Err(Status::NotAuthenticated.into());
    }
    match (chr, access) {
        (Characteristic::Status, Access::Read) => {
            expect_empty(req)?;
            ok(&device.status_page(), resp)
        }
        (Characteristic::Soc, Access::Read) => {
            expect_empty(req)?;
            ok(&device.soc_page(), resp)
        }
        (Characteristic::Bank, Access::Read) => {
            expect_empty(req)?;
            ok(&device.bank_page(), resp)
        }
        (Characteristic::History, Access::Read) => {
            expect_empty(req)?;
            ok(&device.history_page(), resp)
        }
        (Characteristic::Settings, Access::Read) => {
            expect_empty(req)?;
            ok(&device.settings(), resp)
        }
        (Characteristic::Battery, _) => {
            // Selecting a battery is a parameter of a read: it changes nothing in the device,
            // so it is allowed on any link, like the monitoring reads (BLE-2).
            let select = if req.is_empty() {
                BatterySelect::default()
            } else {
                decode_request::<BatterySelect>(req)?
            };
            let page = device
                .battery_page(select.number)
                .ok_or(Status::NoSuchBattery)?;
            ok(&page, resp)
        }
        (Characteristic::Settings, Access::Write) => {
            if !authenticated {
                return Err(Status::NotAuthenticated.into());
            }
            let settings = decode_settings(req)?;
            settings.validate().map_err(|e| Refused::Value(e.into()))?;
            device
                .write_settings(now_ms, settings)
                .map_err(|e| Refused::Value(e.into()))?;
            let reply = ok(&device.settings(), resp)?;
            Ok(Reply {
                changed: Changed {
                    settings: true,
                    ..Changed::default()
                },
                ..reply
            })
        }
        (Characteristic::ControlPoint, Access::Write) => {
            if !authenticated {
                return Err(Status::NotAuthenticated.into());
            }
            run(device, now_ms, decode_command(req)?, resp)
        }
        (Characteristic::DeviceName, Access::Read) => {
            expect_empty(req)?;
            ok(&device.device_name(), resp)
        }
        (Characteristic::DeviceName, Access::Write) => {
            if !authenticated {
                return Err(Status::NotAuthenticated.into());
            }
            let name = decode_request::<NameText>(req)?
                .name()
                .map_err(name_refusal)?;
            device.set_device_name(now_ms, name);
            let reply = ok(&device.device_name(), resp)?;
            Ok(Reply {
                changed: Changed {
                    name: true,
                    ..Changed::default()
                },
                ..reply
            })
        }
        (Characteristic::ControlPoint, Access::Read)
        | (
            Characteristic::Status
            | Characteristic::Bank
            | Characteristic::History
            | Characteristic::Soc,
            Access::Write,
        ) => Err(Status::UnsupportedAccess.into()),
    }
}

/// A name that is no name: its length in bytes out of range is a Refusal (field 0, the length,
/// 1..=[`MAX_NAME_LEN`]); text that cannot be shown (control or invisible format characters,
/// outer white space) is Malformed.
fn name_refusal(error: NameError) -> Refused {
    match error {
        NameError::Length { .. } => Refused::Value(Refusal {
            field: 0,
            min: 1,
            max: MAX_NAME_LEN as u32,
        }),
        NameError::ControlCharacter { .. }
        | NameError::InvisibleCharacter { .. }
        | NameError::OuterSpace => Refused::Status(Status::Malformed),
    }
}

fn run<D: Device>(
    device: &mut D,
    now_ms: u64,
    command: Command,
    resp: &mut [u8],
) -> Result<Reply, Refused> {
    let not_available = |_| Refused::Status(Status::NotAvailable);
    let mut changed = Changed::default();
    match command {
        Command::SetSoc { soc_permille } => {
            if soc_permille > MAX_SOC_PERMILLE {
                return Err(Refused::Value(Refusal {
                    field: 0,
                    min: 0,
                    max: u32::from(MAX_SOC_PERMILLE),
                }));
            }
            device
                .set_soc(now_ms, soc_permille)
                .map_err(not_available)?;
            changed.soc = true;
        }
        Command::Synchronise => {
            device.synchronise(now_ms).map_err(not_available)?;
            changed.soc = true;
        }
        Command::ResetHistory => {
            device.reset_history(now_ms);
            changed.history = true;
        }
        Command::ResetToDefaults => {
            device.reset_to_defaults(now_ms);
            changed.settings = true;
        }
        Command::ChangePasskey { passkey } => {
            if !(MIN_PASSKEY..=MAX_PASSKEY).contains(&passkey) {
                return Err(Refused::Value(Refusal {
                    field: 0,
                    min: MIN_PASSKEY,
                    max: MAX_PASSKEY,
                }));
            }
            device
                .change_passkey(now_ms, passkey)
                .map_err(not_available)?;
            changed.secrets = true;
        }
        Command::ReadAdvertisementKey => {
            let key = AdvertisementKey {
                key: device.advertisement_key().ok_or(Status::NotAvailable)?,
            };
            return ok(&key, resp);
        }
        Command::ListBonds => return ok(&device.bond_list(), resp),
        Command::RemoveBond { bond } => device.remove_bond(bond).map_err(not_available)?,
        Command::ForgetLostBatteries => {
            let count = device.forget_lost_batteries(now_ms);
            return ok(&ForgottenBatteries { count }, resp);
        }
        Command::NewReadoutKey => {
            let key = device.new_readout_key().map_err(not_available)?;
            return Ok(Reply {
                changed: Changed {
                    secrets: true,
                    ..Changed::default()
                },
                ..ok(&AdvertisementKey { key }, resp)?
            });
        }
        Command::SetReadProtection { enabled } => {
            device.set_read_protection(enabled).map_err(not_available)?;
            changed.secrets = true;
        }
    }
    Ok(Reply {
        changed,
        ..ok(&(), resp)?
    })
}

/// An `Ok` response with `body`. Every body fits [`MAX_RESPONSE_LEN`] (tested), which the
/// buffer holds; should one ever not, the client gets "too long" rather than a panic.
fn ok<T: Serialize>(body: &T, resp: &mut [u8]) -> Result<Reply, Refused> {
    respond(Status::Ok, Some(body), resp).map_err(|_| Refused::Status(Status::Oversized))
}

fn respond<T: Serialize>(
    status: Status,
    body: Option<&T>,
    resp: &mut [u8],
) -> Result<Reply, ProtocolError> {
    let len = encode_response(status, body, resp)?;
    Ok(Reply {
        len,
        status,
        changed: Changed::default(),
    })
}

fn expect_empty(req: &[u8]) -> Result<(), Status> {
    if req.is_empty() {
        Ok(())
    } else {
        Err(Status::Oversized)
    }
}
