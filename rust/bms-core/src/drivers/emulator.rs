//! A pack that answers requests exactly as a real one of its protocol does: for the simulator,
//! `bms-sim serial` and the tests. It answers only requests addressed to it, can sleep through
//! the first request (as JBD packs do) or stay silent (a pack taken away).

use heapless::Vec;

use super::{daly, jbd, jk, PackData, Protocol};

/// One emulated pack.
#[derive(Clone, Debug)]
pub struct PackEmulator {
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Its address (JK DIP switches, Daly board number; 1 for JBD).
    pub address: u8,
    /// What it reports.
    pub data: PackData,
    /// It ignores the next request, then wakes (a JBD pack in sleep mode).
    pub asleep: bool,
    /// It answers nothing.
    pub silent: bool,
    /// Its name (JBD register 0x05).
    pub name: &'static [u8],
    counter: u8,
}

impl PackEmulator {
    /// An awake pack at `address` reporting `data`.
    pub fn new(protocol: Protocol, address: u8, data: PackData) -> Self {
        PackEmulator {
            protocol,
            address,
            data,
            asleep: false,
            silent: false,
            name: b"OpenBMS sim pack",
            counter: 0,
        }
    }

    /// Answers `request` (one complete request frame) through `send`, one call per frame, if
    /// it is addressed to this pack and well formed; anything else gets no answer, as on a real
    /// line.
    pub fn answer(&mut self, request: &[u8], mut send: impl FnMut(&[u8])) {
        if self.silent || !self.addressed(request) {
            return;
        }
        if self.asleep {
            self.asleep = false;
            return;
        }
        let mut frame = [0u8; jk::STATUS_FRAME_LEN];
        match self.protocol {
            Protocol::OpenBms => {}
            Protocol::Jbd => {
                let Some(register) = jbd::decode_request(request) else {
                    return;
                };
                let mut data: Vec<u8, 64> = Vec::new();
                match register {
                    jbd::REG_BASIC => jbd::basic_data(&self.data, &mut data),
                    jbd::REG_CELLS => jbd::cells_data(&self.data, &mut data),
                    jbd::REG_NAME => {
                        let _ = data.extend_from_slice(self.name);
                    }
                    _ => return,
                }
                let len = jbd::encode_response(register, &data, &mut frame);
                send(frame.get(..len).unwrap_or(&[]));
            }
            Protocol::Jk => {
                self.counter = self.counter.wrapping_add(1);
                let len = jk::encode_status(&self.data, self.counter, &mut frame);
                send(frame.get(..len).unwrap_or(&[]));
                let len = jk::encode_echo(self.address, &mut frame);
                send(frame.get(..len).unwrap_or(&[]));
            }
            Protocol::Daly => {
                let Some((_, id)) = daly::decode_request(request) else {
                    return;
                };
                let mut datas = Vec::new();
                daly::response_data(&self.data, id, &mut datas);
                for d in &datas {
                    let len = daly::encode_response(self.address, id, d, &mut frame);
                    send(frame.get(..len).unwrap_or(&[]));
                }
            }
        }
    }

    fn addressed(&self, request: &[u8]) -> bool {
        match self.protocol {
            Protocol::OpenBms => false,
            Protocol::Jbd => jbd::decode_request(request).is_some(),
            Protocol::Jk => jk::decode_request(request) == Some(self.address),
            Protocol::Daly => {
                daly::decode_request(request).is_some_and(|(board, _)| board == self.address)
            }
        }
    }
}

/// A plausible pack for tests and the simulator: `cells` cells at `cell_mv`, 25 °C, 100 Ah,
/// 80 %, both switches on; temperatures as many as the protocol carries.
pub fn sample_pack(protocol: Protocol, cells: usize, cell_mv: u16) -> PackData {
    let mut data = PackData {
        current_ma: -2_000,
        soc_percent: Some(80),
        capacity_mah: 100_000,
        firmware: if protocol == Protocol::Jbd { 0x0100 } else { 0 },
        charge_allowed: true,
        discharge_allowed: true,
        ..PackData::default()
    };
    for _ in 0..cells.min(super::MAX_PACK_CELLS) {
        let _ = data.cells_mv.push(cell_mv);
    }
    let _ = data.temps_ddegc.extend_from_slice(&[250, 250]);
    data
}
