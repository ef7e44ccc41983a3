//! OpenBMS in the browser: the web app's only protocol code and its demo device.
//!
//! - Encoding and decoding of every GATT message is `bms_core::protocol` itself, so the page
//!   never carries a second decoder: pages come out as plain JavaScript objects with the field
//!   names of `docs/protocol.md`.
//! - Settings validation is `bms_core::settings::Settings::validate`, the check the device
//!   runs, with the same refusal (field and range) the device would send.
//! - [`DemoDevice`] is the BMS core against the simulator's bank (`bms_sim::engine`), a
//!   `bms_core::node::Node` answering GATT requests as the firmware's does (`app/src/gatt.c`:
//!   the battery selector is kept per connection and only when the core said Ok).
//!
//! Everything here is also usable from Rust (the crate is an rlib too), which is how its tests
//! run on the host.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use bms_core::codes::{Code, Severity};
use bms_core::name::{DeviceName, NameText, DEFAULT_NAME, MAX_NAME_LEN};
use bms_core::protection::Reason;
use bms_core::protocol::{
    self, Access, AdvertisementKey, BankPage, BatteryPage, BatterySelect, Characteristic, Command,
    HistoryPage, Refusal, SocPage, Status, StatusPage,
};
use bms_core::readout;
use bms_core::settings::{Settings, SettingsField};
use bms_sim::engine::{Engine, RunOptions};
use bms_sim::scenario::{self, Action, Scenario};
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()))
}

fn from_js<T: for<'de> Deserialize<'de>>(value: JsValue, what: &str) -> Result<T, JsError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| JsError::new(&format!("{what}: {e}")))
}

/// One characteristic of the service, for the page's GATT code.
#[derive(Serialize)]
struct CharacteristicInfo {
    number: u8,
    uuid: String,
}

/// One status, code or reason of the catalogues.
#[derive(Serialize)]
struct Named {
    number: u32,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'static str>,
}

/// One setting: its wire number, name, range and default.
#[derive(Serialize)]
struct FieldInfo {
    number: u8,
    name: &'static str,
    min: u16,
    max: u16,
    default: u16,
    restored_by_factory_reset: bool,
}

/// What the page needs to know about the protocol, every number from the core.
#[derive(Serialize)]
struct ProtocolInfo {
    version: u8,
    service_uuid: String,
    characteristics: Vec<(String, CharacteristicInfo)>,
    statuses: Vec<Named>,
    reasons: Vec<Named>,
    codes: Vec<Named>,
    settings: Vec<FieldInfo>,
    max_soc_permille: u16,
    max_passkey: u32,
    max_request_len: usize,
    max_response_len: usize,
    max_name_len: usize,
    default_name: &'static str,
    /// The Instant Readout's company id and the first payload bytes of an OpenBMS (record,
    /// prefix, default product id, record type): how the page finds a renamed BMS.
    readout_company_id: u16,
    readout_prefix: [u8; 5],
}

fn uuid_text(uuid: u128) -> String {
    let h = format!("{uuid:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn characteristic_name(c: Characteristic) -> &'static str {
    match c {
        Characteristic::Status => "status",
        Characteristic::Bank => "bank",
        Characteristic::Battery => "battery",
        Characteristic::History => "history",
        Characteristic::Settings => "settings",
        Characteristic::ControlPoint => "control",
        Characteristic::DeviceName => "name",
        Characteristic::Soc => "soc",
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
        Severity::Error => "error",
    }
}

/// The protocol's numbers and names: version, UUIDs, statuses, reasons, codes (with severity),
/// settings (range, default). A JavaScript object.
#[wasm_bindgen(js_name = protocolInfo)]
pub fn protocol_info() -> Result<JsValue, JsError> {
    to_js(&ProtocolInfo {
        version: protocol::VERSION,
        service_uuid: uuid_text(protocol::SERVICE_UUID),
        characteristics: Characteristic::ALL
            .iter()
            .map(|&c| {
                (
                    characteristic_name(c).to_string(),
                    CharacteristicInfo {
                        number: c as u8,
                        uuid: uuid_text(c.uuid()),
                    },
                )
            })
            .collect(),
        statuses: Status::ALL
            .iter()
            .map(|&s| Named {
                number: u32::from(s as u8),
                name: status_text(s),
                severity: None,
            })
            .collect(),
        reasons: Reason::ALL
            .iter()
            .map(|&r| Named {
                number: u32::from(r as u8),
                name: r.name().to_string(),
                severity: None,
            })
            .collect(),
        codes: Code::ALL
            .iter()
            .map(|&c| Named {
                number: u32::from(c.number()),
                name: c.name().to_string(),
                severity: Some(severity_name(c.severity())),
            })
            .collect(),
        settings: SettingsField::ALL
            .iter()
            .map(|&f| {
                let b = f.bounds();
                FieldInfo {
                    number: f as u8,
                    name: f.name(),
                    min: b.min,
                    max: b.max,
                    default: b.default,
                    restored_by_factory_reset: f.restored_by_factory_reset(),
                }
            })
            .collect(),
        max_soc_permille: protocol::MAX_SOC_PERMILLE,
        max_passkey: protocol::MAX_PASSKEY,
        max_request_len: protocol::MAX_REQUEST_LEN,
        max_response_len: protocol::MAX_RESPONSE_LEN,
        max_name_len: MAX_NAME_LEN,
        default_name: DEFAULT_NAME,
        readout_company_id: readout::COMPANY_ID,
        readout_prefix: {
            let [lo, hi] = readout::DEFAULT_PRODUCT_ID.to_le_bytes();
            [
                readout::PRODUCT_ADVERTISEMENT,
                readout::PREFIX_BYTE,
                lo,
                hi,
                readout::RECORD_TYPE_BMS,
            ]
        },
    })
}

/// The core's own words for a status.
fn status_text(s: Status) -> String {
    s.to_string()
}

/// A refusal in words, with the core's own field names.
#[derive(Serialize)]
struct RefusalText {
    field: u8,
    name: &'static str,
    min: u32,
    max: u32,
    text: String,
}

/// What a refusal's field names: a setting, the length of a device name, a command argument.
#[derive(Clone, Copy)]
enum RefusalOf {
    Settings,
    Name,
    Argument,
}

fn refusal_text(refusal: Refusal, of: RefusalOf) -> RefusalText {
    let name = match of {
        RefusalOf::Settings => {
            SettingsField::from_u8(refusal.field).map_or("unknown field", SettingsField::name)
        }
        RefusalOf::Name => "device name length in bytes",
        RefusalOf::Argument => "argument",
    };
    RefusalText {
        field: refusal.field,
        name,
        min: refusal.min,
        max: refusal.max,
        text: format!("{name} must be between {} and {}", refusal.min, refusal.max),
    }
}

/// A decoded response: its status, and the page or the refusal.
#[derive(Serialize)]
struct Decoded<T> {
    status: u8,
    ok: bool,
    status_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<RefusalText>,
}

fn decode_as<T: for<'de> Deserialize<'de> + Serialize>(
    bytes: &[u8],
    of: RefusalOf,
) -> Result<JsValue, JsError> {
    let (status, body) = protocol::decode_response(bytes)
        .map_err(|s| JsError::new(&format!("response refused: {}", status_text(s))))?;
    let mut out = Decoded::<T> {
        status: status as u8,
        ok: status == Status::Ok,
        status_text: status_text(status),
        page: None,
        refusal: None,
    };
    match status {
        Status::Ok => {
            out.page =
                Some(protocol::decode_body::<T>(body).map_err(|s| {
                    JsError::new(&format!("page does not decode: {}", status_text(s)))
                })?)
        }
        Status::InvalidValue => {
            let refusal = protocol::decode_body::<Refusal>(body).map_err(|s| {
                JsError::new(&format!("refusal does not decode: {}", status_text(s)))
            })?;
            out.refusal = Some(refusal_text(refusal, of));
        }
        _ => {}
    }
    to_js(&out)
}

/// Settings as the page holds them: the values in wire order (field numbers).
#[derive(Serialize)]
struct SettingsValues(Vec<u16>);

impl From<Settings> for SettingsValues {
    fn from(s: Settings) -> Self {
        SettingsValues(SettingsField::ALL.iter().map(|&f| s.get(f)).collect())
    }
}

/// Decodes a response of the characteristic named `kind` ("status", "bank", "battery",
/// "history", "settings"), or of a control-point command ("command", "key" for
/// ReadAdvertisementKey and NewReadoutKey, "bonds" for ListBonds: `{read_protection, bonds:
/// [{address_type, address: [6 bytes, least significant first]}]}`, "forgotten" for
/// ForgetLostBatteries: `{count}`). Returns `{status, ok, status_text, page?, refusal?}`; settings pages
/// come as `{values: [..]}` in field order.
#[wasm_bindgen]
pub fn decode(kind: &str, bytes: &[u8]) -> Result<JsValue, JsError> {
    match kind {
        "status" => decode_as::<StatusPage>(bytes, RefusalOf::Argument),
        "soc" => decode_as::<SocPage>(bytes, RefusalOf::Argument),
        "bank" => decode_as::<BankPage>(bytes, RefusalOf::Argument),
        "battery" => decode_as::<BatteryPage>(bytes, RefusalOf::Argument),
        "history" => decode_as::<HistoryPage>(bytes, RefusalOf::Argument),
        "key" => decode_as::<AdvertisementKey>(bytes, RefusalOf::Argument),
        "bonds" => decode_as::<protocol::BondList>(bytes, RefusalOf::Argument),
        "forgotten" => decode_as::<protocol::ForgottenBatteries>(bytes, RefusalOf::Argument),
        "command" => decode_as::<()>(bytes, RefusalOf::Argument),
        "name" => decode_as::<NameText>(bytes, RefusalOf::Name),
        "settings" => {
            let (status, body) = protocol::decode_response(bytes)
                .map_err(|s| JsError::new(&format!("response refused: {}", status_text(s))))?;
            let page = if status == Status::Ok {
                Some(SettingsValues::from(
                    protocol::decode_body::<Settings>(body).map_err(|s| {
                        JsError::new(&format!("settings do not decode: {}", status_text(s)))
                    })?,
                ))
            } else {
                None
            };
            let refusal = if status == Status::InvalidValue {
                Some(refusal_text(
                    protocol::decode_body::<Refusal>(body)
                        .map_err(|s| JsError::new(&format!("refusal: {}", status_text(s))))?,
                    RefusalOf::Settings,
                ))
            } else {
                None
            };
            to_js(&Decoded {
                status: status as u8,
                ok: status == Status::Ok,
                status_text: status_text(status),
                page,
                refusal,
            })
        }
        other => Err(JsError::new(&format!("unknown response kind {other:?}"))),
    }
}

fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, JsError> {
    let mut out = [0u8; protocol::MAX_REQUEST_LEN];
    let len =
        protocol::encode_request(message, &mut out).map_err(|e| JsError::new(&e.to_string()))?;
    Ok(out[..len].to_vec())
}

fn settings_from(values: &[u16]) -> Result<Settings, JsError> {
    if values.len() != SettingsField::ALL.len() {
        return Err(JsError::new(&format!(
            "settings need {} values, got {}",
            SettingsField::ALL.len(),
            values.len()
        )));
    }
    Ok(SettingsField::ALL
        .iter()
        .zip(values)
        .fold(Settings::default(), |s, (&f, &v)| s.with(f, v)))
}

/// The request bytes of a settings write, from the values in field order.
#[wasm_bindgen(js_name = encodeSettings)]
pub fn encode_settings(values: &[u16]) -> Result<Vec<u8>, JsError> {
    encode(&settings_from(values)?)
}

/// The device's own check of settings (values in field order): `null` when it would accept
/// them, else the refusal it would send, `{field, name, min, max, text}`.
#[wasm_bindgen(js_name = validateSettings)]
pub fn validate_settings(values: &[u16]) -> Result<JsValue, JsError> {
    match settings_from(values)?.validate() {
        Ok(()) => Ok(JsValue::NULL),
        Err(e) => to_js(&refusal_text(Refusal::from(e), RefusalOf::Settings)),
    }
}

/// The request bytes of a Device name write of `name`, after the device's own check: throws
/// the reason (in the core's words) when the device would refuse it.
#[wasm_bindgen(js_name = encodeName)]
pub fn encode_name(name: &str) -> Result<Vec<u8>, JsError> {
    let name = DeviceName::new(name).map_err(|e| JsError::new(&e.to_string()))?;
    encode(&name)
}

/// The request bytes of a control-point command, given as postcard's serde form:
/// `"Synchronise"`, `"ResetHistory"`, `"ResetToDefaults"`, `"ReadAdvertisementKey"`,
/// `"ListBonds"`, `"ForgetLostBatteries"`, `"NewReadoutKey"`, `{SetSoc: {soc_permille}}`,
/// `{ChangePasskey: {passkey}}`, `{RemoveBond: {bond: {address_type, address}}}`,
/// `{SetReadProtection: {enabled}}`.
#[wasm_bindgen(js_name = encodeCommand)]
pub fn encode_command(command: JsValue) -> Result<Vec<u8>, JsError> {
    encode(&from_js::<Command>(command, "command")?)
}

/// The request bytes that select battery `number` (0-based) on the Battery characteristic.
#[wasm_bindgen(js_name = encodeBatterySelect)]
pub fn encode_battery_select(number: u8) -> Result<Vec<u8>, JsError> {
    encode(&BatterySelect { number })
}

/// A simulated OpenBMS: the core and a simulated bank driven by a scenario, answering GATT
/// requests as the firmware does. One per page; it runs as fast as [`DemoDevice::advance`]
/// is called.
#[wasm_bindgen]
pub struct DemoDevice {
    engine: Engine<'static>,
    selector: Vec<u8>,
}

#[wasm_bindgen]
impl DemoDevice {
    /// A device running the scenario `toml` (the format of `scenarios/`; `name` is used in
    /// error messages), at time 0.
    #[wasm_bindgen(constructor)]
    pub fn new(name: &str, toml: &str) -> Result<DemoDevice, JsError> {
        let scenario: Scenario = scenario::parse(std::path::Path::new(name), toml)
            .map_err(|e| JsError::new(&e.to_string()))?;
        // The engine borrows its scenario for its whole life; a demo device lives as long as
        // the page, so its scenario (a few kilobytes) is kept for good.
        let scenario: &'static Scenario = Box::leak(Box::new(scenario));
        let engine = Engine::new(
            scenario,
            &RunOptions {
                no_samples: true,
                ..RunOptions::default()
            },
        )
        .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(DemoDevice {
            engine,
            selector: Vec::new(),
        })
    }

    /// Runs the simulation `ms` milliseconds further.
    pub fn advance(&mut self, ms: f64) {
        let to = self.engine.now_ms().saturating_add(ms.max(0.0) as u64);
        self.engine.run_until(to, &mut |_| {});
    }

    /// Simulated time since the start, in ms.
    #[wasm_bindgen(getter, js_name = nowMs)]
    pub fn now_ms(&self) -> f64 {
        self.engine.now_ms() as f64
    }

    /// Whether the last control step changed the status page (the device notifies then).
    #[wasm_bindgen(js_name = statusChanged)]
    pub fn status_changed(&self) -> bool {
        self.engine.status_changed()
    }

    /// A read of characteristic `characteristic` (its number): the response bytes.
    pub fn read(&mut self, characteristic: u8, authenticated: bool) -> Result<Vec<u8>, JsError> {
        let req = if characteristic == Characteristic::Battery as u8 {
            self.selector.clone()
        } else {
            Vec::new()
        };
        self.request(characteristic, Access::Read, authenticated, &req)
    }

    /// A write of `value` to characteristic `characteristic`: the response bytes (the firmware
    /// sends a refusal as ATT error 0x80 + status, and a control-point response as an
    /// indication).
    pub fn write(
        &mut self,
        characteristic: u8,
        authenticated: bool,
        value: &[u8],
    ) -> Result<Vec<u8>, JsError> {
        let resp = self.request(characteristic, Access::Write, authenticated, value)?;
        if characteristic == Characteristic::Battery as u8
            && resp.get(1) == Some(&(Status::Ok as u8))
        {
            self.selector = value.to_vec();
        }
        Ok(resp)
    }

    /// A new connection: the battery selector returns to battery 0.
    pub fn reconnect(&mut self) {
        self.selector.clear();
    }

    fn request(
        &mut self,
        characteristic: u8,
        access: Access,
        authenticated: bool,
        req: &[u8],
    ) -> Result<Vec<u8>, JsError> {
        let mut resp = [0u8; protocol::MAX_RESPONSE_LEN];
        let reply = self
            .engine
            .gatt(characteristic, access, authenticated, req, &mut resp)
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(resp[..reply.len].to_vec())
    }

    /// Does a scenario action now: `action` as in `[[event]]` (`unplug_cable`, `replug_cable`,
    /// `remote_off`, `remote_on`, `enable`, `disable`, ...), `battery` 1-based, `target` a load
    /// or charger name. Returns what happened, in words.
    pub fn act(
        &mut self,
        action: &str,
        battery: Option<u32>,
        target: Option<String>,
    ) -> Result<String, JsError> {
        let parsed: Result<Action, serde::de::value::Error> =
            Action::deserialize(action.into_deserializer());
        let action = parsed.map_err(|e| JsError::new(&format!("action {action:?}: {e}")))?;
        self.engine
            .apply(action, battery.map(|b| b as usize), target.as_deref(), None)
            .map_err(|e| JsError::new(&e))
    }

    /// Sets the ambient temperature in °C (`undefined` = back to the scenario's); the bank
    /// follows at its own thermal pace.
    #[wasm_bindgen(js_name = setAmbient)]
    pub fn set_ambient(&mut self, celsius: Option<f64>) -> Result<(), JsError> {
        self.engine
            .set_ambient_c(celsius)
            .map_err(|e| JsError::new(&e))
    }

    /// The simulated bank's true state of charge in percent (what the BMS estimates).
    #[wasm_bindgen(js_name = trueSocPct)]
    pub fn true_soc_pct(&self) -> f64 {
        self.engine.bank().soc_pct()
    }

    /// The simulated bank's temperature in °C.
    #[wasm_bindgen(js_name = bankTempC)]
    pub fn bank_temp_c(&self) -> f64 {
        self.engine.bank().temp_c()
    }
}
