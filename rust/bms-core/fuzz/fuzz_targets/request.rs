//! Fuzzes the GATT request handler on a real device ([`Node`], BLE-4): the first input byte picks the
//! characteristic, the second the access, the link security and whether read protection is on,
//! the rest is the request. Every input must get a well-formed response, and a refused one, a
//! read, or a write on an unauthenticated link must change nothing: the settings, SoC, history,
//! passkey, name, read protection, the Instant Readout key, the bank, the pairing state, the
//! bonds and the bond action waiting for the platform, and the stored records. With read
//! protection on, an unauthenticated link gets nothing but the device name, which is advertised
//! anyway (BLE-2).
#![no_main]

use std::sync::OnceLock;

use bms_core::bms::Inputs;
use bms_core::bus::{BatteryFlags, BatteryModel, BatteryReport};
use bms_core::node::Node;
use bms_core::pairing::Bond;
use bms_core::protocol::{
    decode_response, encode_request, Access, BankPage, Characteristic, Command, HistoryPage,
    Status, StatusPage, MAX_REQUEST_LEN, MAX_RESPONSE_LEN,
};
use bms_core::storage::MemStorage;
use libfuzzer_sys::fuzz_target;

/// The bonds the BLE stack reports, so that a `RemoveBond` of one of them is taken.
const BONDS: [Bond; 2] = [
    Bond {
        address_type: 0,
        address: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
    },
    Bond {
        address_type: 1,
        address: [0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6],
    },
];

/// A device with a two-battery bank and two bonds, without and with read protection, built once
/// and cloned for every input.
fn node(protected: bool) -> &'static Node<MemStorage> {
    static NODES: OnceLock<[Node<MemStorage>; 2]> = OnceLock::new();
    &NODES.get_or_init(|| [build(false), build(true)])[usize::from(protected)]
}

fn build(protected: bool) -> Node<MemStorage> {
    let mut random = |out: &mut [u8]| {
        out.fill(0x5A);
        true
    };
    let mut node = Node::open(MemStorage::new(), &mut random);
    for t in (0..=3_000).step_by(500) {
        for serial in [7, 3] {
            let report = BatteryReport {
                serial,
                model: BatteryModel::Lfp12V8,
                capacity_dah: 1000,
                firmware: 0x0100,
                cells_mv: heapless::Vec::from_slice(&[3300, 3310, 3305, 3302]).unwrap(),
                temps_ddegc: heapless::Vec::from_slice(&[210]).unwrap(),
                current_ma: 1500,
                flags: BatteryFlags {
                    allowed_to_charge: true,
                    allowed_to_discharge: true,
                    balancing: false,
                },
            };
            assert!(node.handle_report(t, &report));
        }
        let _ = node.step(
            t,
            &Inputs {
                supply_mv: 13_217,
                ..Inputs::default()
            },
        );
    }
    node.set_bonds(&BONDS);
    if protected {
        let mut req = [0u8; MAX_REQUEST_LEN];
        let len = encode_request(&Command::SetReadProtection { enabled: true }, &mut req)
            .expect("a command fits a request");
        let mut resp = [0u8; MAX_RESPONSE_LEN];
        let reply = node
            .gatt(
                3_000,
                Characteristic::ControlPoint as u8,
                Access::Write,
                true,
                &req[..len],
                &mut resp,
                &mut |out: &mut [u8]| {
                    out.fill(0x42);
                    true
                },
            )
            .expect("the buffer holds MAX_RESPONSE_LEN");
        assert_eq!(reply.status, Status::Ok, "read protection refused");
        assert!(node.bms().read_protection());
    }
    node
}

/// Everything a request may change, as comparable values: the state and the stored records.
/// The stored records alone do not show a change of the secrets made within 10 s of the last
/// stored one (it waits for the interval), so the key, the read protection and the pairing
/// state are compared as the device holds them.
fn snapshot(node: &Node<MemStorage>) -> impl PartialEq + std::fmt::Debug {
    let bms = node.bms();
    (
        (
            *bms.settings(),
            HistoryPage::from_history(bms.history()),
            StatusPage::from_bms(bms),
            BankPage::from_bank(bms.bank(), bms.balancer().into()),
            bms.soc_record(),
        ),
        (
            node.passkey(),
            *node.device_name(),
            bms.has_device_key(),
            *bms.device_key(),
            bms.read_protection(),
            bms.pairing().clone(),
            bms.clone().take_bond_action(),
        ),
        node.storage().clone(),
    )
}

fuzz_target!(|data: &[u8]| {
    let [characteristic, flags, req @ ..] = data else {
        return;
    };
    let protected = flags & 4 == 4;
    let mut node = node(protected).clone();
    let before = snapshot(&node);
    let access = if flags & 1 == 1 {
        Access::Write
    } else {
        Access::Read
    };
    let authenticated = flags & 2 == 2;
    let mut resp = [0u8; MAX_RESPONSE_LEN];
    let reply = node
        .gatt(
            5_000,
            *characteristic,
            access,
            authenticated,
            req,
            &mut resp,
            &mut |out: &mut [u8]| {
                out.fill(0x42);
                true
            },
        )
        .expect("the buffer holds MAX_RESPONSE_LEN");
    assert!(reply.len >= 2 && reply.len <= MAX_RESPONSE_LEN);
    assert_eq!(
        decode_response(&resp[..reply.len]).map(|r| r.0),
        Ok(reply.status)
    );
    if reply.status != Status::Ok || access == Access::Read || !authenticated {
        assert_eq!(
            snapshot(&node),
            before,
            "a refused request, a read or an unauthenticated write changed state"
        );
    }
    if protected && !authenticated && reply.status == Status::Ok {
        assert_eq!(
            (Characteristic::from_u8(*characteristic), access),
            (Some(Characteristic::DeviceName), Access::Read),
            "read protection let an unauthenticated link through"
        );
    }
});
