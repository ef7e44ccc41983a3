//! `bms-sim serial`: packs of a chosen protocol on a real serial port (a USB-UART or RS485
//! adapter wired to a board's battery UART), so that a board can be brought up on a desk
//! without batteries. The packs are the core's [`PackEmulator`]s: they answer each request
//! addressed to them exactly as a JBD, JK-PB or Daly BMS does, and stay silent otherwise.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bms_core::drivers::emulator::{sample_pack, PackEmulator};
use bms_core::drivers::{daly, jbd, jk, LineConfig, LineError, Protocol};

/// Longest request of any protocol, bytes.
const MAX_REQUEST: usize = daly::FRAME_LEN;

/// What to emulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SerialPacks {
    /// The protocol the packs speak.
    pub protocol: Protocol,
    /// How many packs, at addresses 1..N (JBD: 1).
    pub packs: u8,
    /// Cells per pack (4: 12.8 V, 8: 25.6 V, 16: 51.2 V).
    pub cells: usize,
    /// Every cell's voltage, mV.
    pub cell_mv: u16,
    /// The packs fall silent after this long (to see them lost after 5 s), if given.
    pub silent_after: Option<Duration>,
}

impl SerialPacks {
    /// The emulated packs; refused as the core would refuse their line at `baud`.
    pub fn emulators(&self, baud: u32) -> Result<Vec<PackEmulator>, LineError> {
        let config = LineConfig::scan(self.protocol, baud, 0, self.packs)?;
        Ok(config
            .addresses
            .iter()
            .map(|&a| {
                PackEmulator::new(
                    self.protocol,
                    a,
                    sample_pack(self.protocol, self.cells, self.cell_mv),
                )
            })
            .collect())
    }
}

/// Length of a request of `protocol`.
fn request_len(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Jbd => jbd::REQUEST_LEN,
        Protocol::Jk => jk::REQUEST_LEN,
        Protocol::Daly | Protocol::OpenBms => daly::FRAME_LEN,
    }
}

/// Whether `bytes` is one whole request of `protocol`.
fn is_request(protocol: Protocol, bytes: &[u8]) -> bool {
    match protocol {
        Protocol::Jbd => jbd::decode_request(bytes).is_some(),
        Protocol::Jk => jk::decode_request(bytes).is_some(),
        Protocol::Daly => daly::decode_request(bytes).is_some(),
        Protocol::OpenBms => false,
    }
}

/// Finds requests in the bytes a line delivers (any chunking, noise between them) and has
/// the packs answer each.
#[derive(Debug)]
pub struct Responder {
    protocol: Protocol,
    packs: Vec<PackEmulator>,
    buf: Vec<u8>,
    /// Requests found.
    pub requests: u64,
    /// Bytes the packs sent.
    pub answered_bytes: u64,
}

impl Responder {
    /// A responder for `packs` (all of one protocol).
    pub fn new(protocol: Protocol, packs: Vec<PackEmulator>) -> Self {
        Responder {
            protocol,
            packs,
            buf: Vec::new(),
            requests: 0,
            answered_bytes: 0,
        }
    }

    /// Silences or wakes every pack.
    pub fn set_silent(&mut self, silent: bool) {
        for pack in &mut self.packs {
            pack.silent = silent;
        }
    }

    /// Takes received `bytes`; writes the packs' answers to every complete request to `out`.
    pub fn receive(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(bytes);
        let len = request_len(self.protocol);
        while self.buf.len() >= len {
            if !is_request(self.protocol, &self.buf[..len]) {
                self.buf.remove(0);
                continue;
            }
            let request: Vec<u8> = self.buf.drain(..len).collect();
            self.requests += 1;
            for pack in &mut self.packs {
                pack.answer(&request, |frame| out.extend_from_slice(frame));
            }
        }
        // Nothing longer than a request is worth keeping.
        if self.buf.len() > MAX_REQUEST {
            let excess = self.buf.len() - MAX_REQUEST;
            self.buf.drain(..excess);
        }
        self.answered_bytes += out.len() as u64;
    }
}

/// Serves `packs` on `port` until `running` says stop; each read returns within the port's
/// timeout. Returns the requests answered.
pub fn serve<P: Read + Write>(
    port: &mut P,
    setup: &SerialPacks,
    mut responder: Responder,
    mut running: impl FnMut(&Responder) -> bool,
) -> io::Result<u64> {
    let start = Instant::now();
    let mut rx = [0u8; 256];
    let mut answer = Vec::new();
    while running(&responder) {
        if let Some(after) = setup.silent_after {
            responder.set_silent(start.elapsed() >= after);
        }
        let n = match port.read(&mut rx) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        answer.clear();
        responder.receive(&rx[..n], &mut answer);
        if !answer.is_empty() {
            port.write_all(&answer)?;
            port.flush()?;
        }
    }
    Ok(responder.requests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bms_core::drivers::poller::Poller;
    use bms_core::drivers::MAX_REQUEST_LEN;

    fn setup(protocol: Protocol, packs: u8) -> SerialPacks {
        SerialPacks {
            protocol,
            packs,
            cells: 4,
            cell_mv: 3300,
            silent_after: None,
        }
    }

    #[test]
    fn requests_split_anywhere_and_noise_between_are_answered() {
        let s = setup(Protocol::Daly, 2);
        let mut responder = Responder::new(Protocol::Daly, s.emulators(9600).unwrap());
        let mut request = [0u8; daly::FRAME_LEN];
        daly::encode_request(2, daly::ID_SOC, &mut request);
        let mut out = Vec::new();
        responder.receive(&[0x00, 0xA5, 0x13], &mut out);
        responder.receive(&request[..5], &mut out);
        assert!(out.is_empty());
        responder.receive(&request[5..], &mut out);
        assert_eq!(responder.requests, 1);
        let answer = daly::decode(&out).unwrap();
        assert_eq!((answer.board, answer.id), (2, daly::ID_SOC));
    }

    #[test]
    fn a_line_the_core_refuses_is_refused() {
        let err = setup(Protocol::Daly, 16).emulators(9600).unwrap_err();
        assert!(matches!(err, LineError::RoundTooLong { .. }), "{err}");
        assert!(setup(Protocol::Jbd, 2).emulators(9600).is_err());
    }

    // The core's poller on one end of a pseudo-terminal, the packs on the other: what a board
    // on a USB-UART sees, in wall time.
    #[test]
    fn the_cores_poller_reads_jk_packs_through_a_pty() {
        let (mut bms_end, mut pack_end) = serialport::TTYPort::pair().unwrap();
        use serialport::SerialPort as _;
        bms_end.set_timeout(Duration::from_millis(5)).unwrap();
        pack_end.set_timeout(Duration::from_millis(5)).unwrap();
        let s = setup(Protocol::Jk, 2);
        let responder = Responder::new(Protocol::Jk, s.emulators(115_200).unwrap());
        // Reports come about one per pack per second when nothing is late; a loaded machine
        // can make replies miss their window for a while (the next round asks again).
        let deadline = Instant::now() + Duration::from_secs(60);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let packs = std::thread::spawn(move || {
            serve(&mut pack_end, &s, responder, |_| {
                !stopped.load(std::sync::atomic::Ordering::Relaxed)
            })
            .unwrap()
        });
        let mut poller = Poller::new(LineConfig::new(Protocol::Jk, 0, &[1, 2]).unwrap());
        let start = Instant::now();
        let mut reports = Vec::new();
        let mut rx = [0u8; 512];
        while reports.len() < 4 && Instant::now() < deadline {
            let now = start.elapsed().as_millis() as u64;
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let len = poller.poll(now, &mut tx);
            if len > 0 {
                bms_end.write_all(&tx[..len]).unwrap();
            }
            match bms_end.read(&mut rx) {
                Ok(n) => poller.receive(now, &rx[..n], |r| reports.push(r)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(reports.len() >= 4, "{:?}", poller.stats());
        assert!(reports.iter().any(|r| r.address == 1));
        assert!(reports.iter().any(|r| r.address == 2));
        assert_eq!(reports[0].report.cells_mv.len(), 4);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(packs.join().unwrap() >= 4);
    }
}
