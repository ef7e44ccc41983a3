# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
"""End-to-end BLE test of the OpenBMS firmware on native_sim against Bumble.

A Bumble virtual controller serves HCI over TCP to zephyr.exe (--bt-dev=127.0.0.1:PORT); a
second Bumble controller on the same in-process link is the phone. The phone scans the
firmware's two advertising sets: the Instant Readout (flags and 26 bytes of manufacturer
data; no name, no service, no scan response, so the web app's filters never offer it) from the
identity address (static random), and the connectable set (flags and the OpenBMS service UUID,
by which the web app finds a renamed unit) from a resolvable private address (LE privacy). It
connects to the latter and reads the device
name from the GAP service (Bumble's virtual controller reports advertising and scan-response
data in one report, so the scan response is not where the name is checked), reads the status
page (open), is refused a battery selection on the empty bank with ATT error 0x80 +
NoSuchBattery, is refused a settings write before pairing, pairs with the passkey (123456, set
at boot by the test-only src/known_passkey.c; Bumble's SMP takes passkey 0 for "none"), gets
ATT error 0x80 + InvalidValue for an out-of-range setting, writes the settings
back, reads the Instant Readout key through the control point (command 5, response
indicated) and decodes the advertisement with victron-ble. Wire format: docs/protocol.md (requests [version, body],
responses [version, status, body]).

BLE-2 (pairing window, back-off, bonds): the unit has no bond, so pairing is open for the first
3 minutes after power-up. A wrong passkey fails and starts the 5 s back-off: the right passkey
is refused at once, accepted after it. The successful pairing closes the window: a guest's
pairing is refused, until the owner's button is pressed (the test writes to the firmware's
standard input, src/button_stdin.c sets the GPIO emulator pin); it pairs with the passkey the
phone chose for it (ChangePasskey: the phone's pairing wore 123456). ListBonds (command 6) lists
the identity addresses; the guest's ChangePasskey removes the phone's bond and keeps its own;
RemoveBond (7) of a bond the unit no longer has answers NotAvailable, of the guest's own bond
OK, and that bond goes when the guest disconnects (firmware log).
"""

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

bumble = pytest.importorskip("bumble")
victron_devices = pytest.importorskip("victron_ble.devices")

from bumble.att import ATT_Error  # noqa: E402
from bumble.controller import Controller  # noqa: E402
from bumble.core import UUID, AdvertisingData, PhysicalTransport, ProtocolError  # noqa: E402
from bumble.device import Device, Peer  # noqa: E402
from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC  # noqa: E402
from bumble import hci as bumble_hci  # noqa: E402
from bumble.hci import Address  # noqa: E402
from bumble.link import LocalLink  # noqa: E402
from bumble.pairing import PairingConfig, PairingDelegate  # noqa: E402
from bumble.transport import open_transport  # noqa: E402

VICTRON_COMPANY_ID = 0x02E1
# src/known_passkey.c sets it at boot (ChangePasskey); not 0, which Bumble takes for "none".
PASSKEY = 123456
# BLE-2: a passkey serves one pairing (the phone's wears 123456): the phone chooses this one for
# the guest's pairing (ChangePasskey), which the button's window keeps.
GUEST_PASSKEY = 246802
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
# HCI LE Set Extended Advertising Parameters, advertising event properties (Core Vol 4 Part E
# 7.8.53): connectable, scannable, legacy PDUs.
PROPERTY_CONNECTABLE = 0x01
PROPERTY_SCANNABLE = 0x02
PROPERTY_LEGACY = 0x10


PROTOCOL_VERSION = 1
STATUS_OK = 0
STATUS_INVALID_VALUE = 7
STATUS_NO_SUCH_BATTERY = 8
CHANGE_PASSKEY = 4
READ_ADVERTISEMENT_KEY = 5
LIST_BONDS = 6
REMOVE_BOND = 7
STATUS_NOT_AVAILABLE = 9
# core limits.rs PAIRING_BACKOFF_FIRST_MS: the back-off after the first failed pairing.
BACKOFF_FIRST_S = 5.0
# rust/bms-core limits.rs USER_WRITE_INTERVAL_MS: the pace of stored user changes.
USER_WRITE_INTERVAL_S = 10.0
PHONE_ADDRESS = "F0:F1:F2:F3:F4:F5"
# A Bond on the wire (docs/protocol.md): address_type 1 (random static), least significant
# byte first.
PHONE_BOND = bytes([1, 0xF5, 0xF4, 0xF3, 0xF2, 0xF1, 0xF0])
GUEST_ADDRESS = "E0:E1:E2:E3:E4:E5"
GUEST_BOND = bytes([1, 0xE5, 0xE4, 0xE3, 0xE2, 0xE1, 0xE0])
# bms.h BMS_ADVERTISEMENT_LEN: company id and the Instant Readout payload.
ADVERTISEMENT_LEN = 26
DEVICE_NAME = "OpenBMS"


def att_refused(status: int) -> int:
    """The ATT error of a refused request (docs/protocol.md): 0x80 + protocol status."""
    return 0x80 + status


def bms_uuid(characteristic: int) -> UUID:
    """protocol/wire.rs: fde4NNNN-2435-4d33-8157-077d40b73501, NNNN = characteristic number + 1."""
    return UUID(f"fde4{characteristic + 1:04x}-2435-4d33-8157-077d40b73501")


STATUS, BATTERY, SETTINGS, CONTROL_POINT = bms_uuid(1), bms_uuid(3), bms_uuid(5), bms_uuid(6)
BMS_SERVICE = bms_uuid(0)
DEVICE_NAME_CHR, SOC = bms_uuid(7), bms_uuid(8)


class KeyboardDelegate(PairingDelegate):
    """The phone: a keyboard on which the user types a passkey (the BMS's, unless told)."""

    def __init__(self, passkey=PASSKEY):
        super().__init__(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY)
        self.passkey = passkey

    async def get_number(self):
        return self.passkey


class SlowKeyboard(KeyboardDelegate):
    """The phone's user, asked for the passkey (`asked`), types it once `typed` is set."""

    def __init__(self, asked: asyncio.Event, typed: asyncio.Event):
        super().__init__()
        self.asked, self.typed = asked, typed

    async def get_number(self):
        self.asked.set()
        await self.typed.wait()
        return self.passkey


def varint(value: int) -> bytes:
    """postcard's unsigned varint (docs/protocol.md)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def scan_bms(device):
    """Scans until both advertising sets of the firmware were heard; returns the readout's
    address and manufacturer data, and the connectable set's address (the one with the
    OpenBMS service). Each set carries only its own data: the readout no name and no service
    (the web app's filters would offer it for connecting), the connectable set no readout.
    """
    heard = {}
    mixed = []
    found = asyncio.get_running_loop().create_future()

    def on_advertisement(advertisement):
        data = advertisement.data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True)
        services = advertisement.data.get(
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS
        ) or []
        name = advertisement.data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
        if data and int.from_bytes(data[:2], "little") == VICTRON_COMPANY_ID:
            if BMS_SERVICE in services or name is not None:
                mixed.append(str(advertisement.data))
            heard.setdefault("readout", (advertisement.address, bytes(data)))
        elif BMS_SERVICE in services:
            heard.setdefault("connectable", advertisement.address)
        if len(heard) == 2 and not found.done():
            found.set_result(None)

    device.on("advertisement", on_advertisement)
    await device.start_scanning(active=True)
    try:
        await asyncio.wait_for(found, 30)
    finally:
        device.remove_listener("advertisement", on_advertisement)
        await device.stop_scanning()
    # Listener exceptions are only logged, so the check is here.
    assert not mixed, f"the readout carries a name or the service: {mixed}"
    return heard["readout"][0], heard["readout"][1], heard["connectable"]


def bond_list(*bonds: bytes) -> bytes:
    """The ListBonds response: [version, OK, read_protection off, count, bonds...]."""
    return bytes([PROTOCOL_VERSION, STATUS_OK, 0, len(bonds)]) + b"".join(bonds)


class ControlPoint:
    """A connection's control point: commands written, responses indicated."""

    def __init__(self, characteristic, indications: asyncio.Queue):
        self.characteristic = characteristic
        self.indications = indications

    async def command(self, body: bytes) -> bytes:
        """One command; its indicated response."""
        await self.characteristic.write_value(
            bytes([PROTOCOL_VERSION]) + body, with_response=True
        )
        return bytes(await asyncio.wait_for(self.indications.get(), 10))

    async def refused(self, body: bytes, status: int) -> None:
        """One command refused with 0x80 + status; the refusal is indicated too."""
        with pytest.raises(ATT_Error) as refused:
            await self.characteristic.write_value(
                bytes([PROTOCOL_VERSION]) + body, with_response=True
            )
        assert refused.value.error_code == att_refused(status)
        response = bytes(await asyncio.wait_for(self.indications.get(), 10))
        assert response[:2] == bytes([PROTOCOL_VERSION, status]), response.hex()


async def connect(device, address):
    """Connects once the firmware advertises connectable again (after a disconnection)."""
    for _ in range(50):
        try:
            return await asyncio.wait_for(device.connect(address), 2)
        except (asyncio.TimeoutError, ProtocolError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"{device.name}: no connection to {address}")


async def press_button(firmware, held_s: float) -> None:
    """Presses the owner's button for held_s (src/button_stdin.c reads 'p' and 'r')."""
    firmware.stdin.write(b"p")
    firmware.stdin.flush()
    await asyncio.sleep(held_s)
    firmware.stdin.write(b"r")
    firmware.stdin.flush()


class AdvertisingSetLink(LocalLink):
    """Bumble's in-process link (0.0.236) sends LE data from the sending controller's random
    address, not from the address of the advertising set the central connected to, so the
    central drops everything the firmware sends once it connects to its connectable set (a
    resolvable private address, LE privacy). Test set-up only: data goes out from the
    connection's own address, as over the air.
    """

    def send_acl_data(self, sender_controller, destination_address, transport, data):
        connection = (
            sender_controller.le_connections.get(destination_address)
            if transport == PhysicalTransport.LE
            else None
        )
        destination = self.find_le_controller(destination_address) if connection else None
        if destination is None:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        asyncio.get_running_loop().call_soon(
            destination.on_link_acl_data, connection.self_address, transport, data
        )


def answer_resolving_list_removal(controller: Controller) -> None:
    """Bumble's virtual controller (0.0.236) has no command class for LE Remove Device From
    Resolving List, so it never answers it, and the Zephyr host asserts when bt_unpair() waits
    for the answer. Test set-up only: this controller answers it with success, as it answers
    the Add command. A real controller implements it.
    """

    def on_remove(command):
        controller.send_hci_packet(
            bumble_hci.HCI_Command_Complete_Event(
                num_hci_command_packets=1,
                command_opcode=command.op_code,
                return_parameters=bumble_hci.HCI_StatusReturnParameters(
                    bumble_hci.HCI_ErrorCode.SUCCESS
                ),
            )
        )

    controller.on_hci_le_remove_device_from_resolving_list_command = on_remove


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zephyr_exe(request) -> Path:
    build_dir = request.config.getoption("--build-dir", default=None) or os.environ.get(
        "OPENBMS_BUILD_DIR"
    )
    if not build_dir:
        pytest.skip("no build directory (run through twister, or set OPENBMS_BUILD_DIR)")
    exe = Path(build_dir) / "zephyr" / "zephyr.exe"
    assert exe.exists(), f"{exe} not built"
    return exe


def bms_side(hci, link) -> Controller:
    """The virtual controller the firmware's host talks to over HCI, on the shared air."""
    controller = Controller("bms", host_source=hci.source, host_sink=hci.sink, link=link)
    answer_resolving_list_removal(controller)
    return controller


def start_firmware(exe: Path, port: int) -> subprocess.Popen:
    """The native_sim firmware, its HCI on the TCP port where bms_side listens."""
    return subprocess.Popen(
        [str(exe), f"--bt-dev=127.0.0.1:{port}", "--flash_in_ram"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def run(exe: Path) -> None:
    port = free_port()
    link = AdvertisingSetLink()
    async with await open_transport(f"tcp-server:127.0.0.1:{port}") as hci:
        bms_controller = bms_side(hci, link)
        phone_controller = Controller("phone", link=link)
        phone = Device.with_hci(
            "phone", Address(PHONE_ADDRESS), phone_controller, phone_controller
        )
        typed = KeyboardDelegate()
        phone.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=typed
        )
        guest_controller = Controller("guest", link=link)
        guest = Device.with_hci(
            "guest", Address(GUEST_ADDRESS), guest_controller, guest_controller
        )
        guest.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=KeyboardDelegate(GUEST_PASSKEY)
        )

        firmware = start_firmware(exe, port)
        try:
            await phone.power_on()
            await guest.power_on()

            readout_address, manufacturer_data, address = await scan_bms(phone)
            assert len(manufacturer_data) == ADVERTISEMENT_LEN, manufacturer_data.hex()
            payload = manufacturer_data[2:]
            assert payload[0] == 0x10, "Instant Readout record must start with 0x10"
            # BLE-2, BLE-3: the readout keeps the identity address (decoders know a device
            # by it); the connectable set uses a resolvable private one (LE privacy).
            assert readout_address.is_static, readout_address.to_string()
            assert address.is_resolvable, address.to_string()

            connection = await phone.connect(address)

            # The readout goes on while a central (not even paired) holds the connection:
            # its set stays enabled, neither connectable nor scannable (legacy PDUs). Bumble's
            # virtual controller sends every set as one kind of PDU, so this checks what the
            # firmware asked its controller for (HCI LE Set Extended Advertising Parameters,
            # Data, Enable), not what a second receiver hears.
            readout_set = next(
                s for s in bms_controller.advertising_sets.values() if s.address == readout_address
            )
            for _ in range(50):
                if readout_set.enabled:
                    break
                await asyncio.sleep(0.1)
            assert readout_set.enabled, "no readout while a central is connected"
            properties = int(readout_set.parameters.advertising_event_properties)
            assert properties & PROPERTY_LEGACY, properties
            assert not properties & (PROPERTY_CONNECTABLE | PROPERTY_SCANNABLE), properties
            assert not readout_set.scan_response_data, bytes(readout_set.scan_response_data).hex()
            while_connected = AdvertisingData.from_bytes(bytes(readout_set.data)).get(
                AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True
            )
            assert while_connected and len(while_connected) == ADVERTISEMENT_LEN, (
                bytes(readout_set.data).hex()
            )
            assert int.from_bytes(while_connected[:2], "little") == VICTRON_COMPANY_ID

            peer = Peer(connection)
            await peer.discover_services()
            await peer.discover_characteristics()

            # The name, from the GAP service's Device Name characteristic.
            names = peer.get_characteristics_by_uuid(GATT_DEVICE_NAME_CHARACTERISTIC)
            assert names, "no Device Name characteristic"
            name = bytes(await names[0].read_value()).decode()
            assert name == DEVICE_NAME, f"device name {name!r}"
            status = peer.get_characteristics_by_uuid(STATUS)[0]
            battery = peer.get_characteristics_by_uuid(BATTERY)[0]
            settings = peer.get_characteristics_by_uuid(SETTINGS)[0]
            control = peer.get_characteristics_by_uuid(CONTROL_POINT)[0]

            # BLE-1: the status page is readable without pairing.
            page = bytes(await status.read_value())
            assert page[:2] == bytes([PROTOCOL_VERSION, STATUS_OK]), page.hex()

            # BLE-1, BLE-4: no battery reports here, so selecting battery 0 is refused with
            # ATT error 0x80 + NoSuchBattery, and a read answers with that status.
            with pytest.raises(ATT_Error) as refused:
                await battery.write_value(bytes([PROTOCOL_VERSION, 0]), with_response=True)
            assert refused.value.error_code == att_refused(STATUS_NO_SUCH_BATTERY)
            page = bytes(await battery.read_value())
            assert page == bytes([PROTOCOL_VERSION, STATUS_NO_SUCH_BATTERY]), page.hex()

            # BLE-2: a write before pairing is refused by the stack. The request is the
            # settings just read, sent back unchanged: [version, body].
            current = bytes(await settings.read_value())
            assert current[:2] == bytes([PROTOCOL_VERSION, STATUS_OK]), current.hex()
            request = bytes([PROTOCOL_VERSION]) + current[2:]
            with pytest.raises(ATT_Error) as refused:
                await settings.write_value(request, with_response=True)
            assert refused.value.error_code == ATT_INSUFFICIENT_AUTHENTICATION

            # BLE-2: no bond yet, so pairing is open after power-up. A wrong passkey fails
            # and starts the back-off: the right one is refused until it ends.
            typed.passkey = PASSKEY + 1
            with pytest.raises(ProtocolError):
                await connection.pair()
            typed.passkey = PASSKEY
            with pytest.raises(ProtocolError):
                await connection.pair()
            await asyncio.sleep(BACKOFF_FIRST_S + 0.5)

            # BLE-2: passkey pairing gives an authenticated link. An out-of-range value
            # (charged_cell_mv 3000) is refused with 0x80 + InvalidValue; the settings read
            # before are accepted.
            await connection.pair()
            too_low = bytes([PROTOCOL_VERSION, 0xB8, 0x17]) + current[4:]
            with pytest.raises(ATT_Error) as refused:
                await settings.write_value(too_low, with_response=True)
            assert refused.value.error_code == att_refused(STATUS_INVALID_VALUE)
            assert bytes(await settings.read_value()) == current
            await settings.write_value(request, with_response=True)

            # BLE-1: the State of charge page is open; the owner's device name, written over
            # the authenticated link, becomes the GAP Device Name and the advertised name.
            soc = peer.get_characteristics_by_uuid(SOC)[0]
            page = bytes(await soc.read_value())
            assert page[:2] == bytes([PROTOCOL_VERSION, STATUS_OK]), page.hex()
            rename = peer.get_characteristics_by_uuid(DEVICE_NAME_CHR)[0]
            new_name = "Boat 2"
            await rename.write_value(
                bytes([PROTOCOL_VERSION, len(new_name)]) + new_name.encode(), with_response=True
            )
            page = bytes(await rename.read_value())
            assert page == bytes([PROTOCOL_VERSION, STATUS_OK, len(new_name)]) + new_name.encode()
            for _ in range(50):
                gap_name = bytes(await names[0].read_value()).decode()
                if gap_name == new_name:
                    break
                await asyncio.sleep(0.1)
            assert gap_name == new_name, f"GAP Device Name {gap_name!r} after the rename"
            # The new name in the connectable set's scan response; the readout has none.
            connectable_set = next(
                s for s in bms_controller.advertising_sets.values() if s is not readout_set
            )
            scan_response = AdvertisingData.from_bytes(bytes(connectable_set.scan_response_data))
            assert scan_response.get(AdvertisingData.COMPLETE_LOCAL_NAME) == new_name, (
                bytes(connectable_set.scan_response_data).hex()
            )
            assert not readout_set.scan_response_data, bytes(readout_set.scan_response_data).hex()

            # BLE-1, SET-2: a phone alternating two names: the scan response takes each at
            # once; the host (GAP Device Name, stored by the stack as "bt/name") takes the
            # burst's last one when the write interval is over, not every one (log below).
            for i in range(20):
                burst_name = f"Boat {3 + i % 2}"
                await rename.write_value(
                    bytes([PROTOCOL_VERSION, len(burst_name)]) + burst_name.encode(),
                    with_response=True,
                )
            for _ in range(20):
                scan_response = AdvertisingData.from_bytes(
                    bytes(connectable_set.scan_response_data)
                )
                if scan_response.get(AdvertisingData.COMPLETE_LOCAL_NAME) == burst_name:
                    break
                await asyncio.sleep(0.1)
            assert scan_response.get(AdvertisingData.COMPLETE_LOCAL_NAME) == burst_name
            for _ in range(int(USER_WRITE_INTERVAL_S + 3) * 10):
                gap_name = bytes(await names[0].read_value()).decode()
                if gap_name == burst_name:
                    break
                await asyncio.sleep(0.1)
            assert gap_name == burst_name, f"GAP Device Name {gap_name!r} after the burst"

            # BLE-3: the key, read over the authenticated link, decodes the advertisement.
            indications = asyncio.Queue()
            await peer.subscribe(control, indications.put_nowait, prefer_notify=False)
            await control.write_value(
                bytes([PROTOCOL_VERSION, READ_ADVERTISEMENT_KEY]), with_response=True
            )
            response = bytes(await asyncio.wait_for(indications.get(), 10))
            assert response[:2] == bytes([PROTOCOL_VERSION, STATUS_OK]), response.hex()
            device_key = response[2:18]
            assert len(device_key) == 16
            parser = victron_devices.detect_device_type(payload)
            assert parser is not None, f"victron-ble knows no record type 0x{payload[4]:02x}"
            parsed = parser(device_key.hex()).parse(payload)
            assert parsed is not None

            # BLE-2: the bond the stack made is the core's: ListBonds names the phone
            # (BondList: read_protection off, one bond).
            phone_cp = ControlPoint(control, indications)
            response = await phone_cp.command(bytes([LIST_BONDS]))
            assert response == bond_list(PHONE_BOND), response.hex()
            # BLE-2: the phone's pairing wore the passkey (passkey entry shows it to anyone
            # listening), so the next press would make a new one; the phone chooses the next
            # pairing's passkey instead (no other bond to remove).
            response = await phone_cp.command(bytes([CHANGE_PASSKEY]) + varint(GUEST_PASSKEY))
            assert response == bytes([PROTOCOL_VERSION, STATUS_OK]), response.hex()
            await connection.disconnect()

            # BLE-2: the successful pairing closed the window: a guest connects (the
            # connectable advertisement is back) but its pairing is refused ...
            readout_after, _, address = await scan_bms(guest)
            # Privacy once bonded as before: the connectable set still from an RPA, the
            # readout still from the identity address.
            assert address.is_resolvable, address.to_string()
            assert readout_after == readout_address, readout_after.to_string()
            guest_connection = await connect(guest, address)
            with pytest.raises(ProtocolError):
                await guest_connection.pair()

            # ... until the owner presses the button (src/button_stdin.c).
            await press_button(firmware, 0.3)
            await asyncio.sleep(0.5)
            await guest_connection.pair()
            guest_peer = Peer(guest_connection)
            await guest_peer.discover_services()
            await guest_peer.discover_characteristics()
            guest_indications = asyncio.Queue()
            guest_control = guest_peer.get_characteristics_by_uuid(CONTROL_POINT)[0]
            await guest_peer.subscribe(
                guest_control, guest_indications.put_nowait, prefer_notify=False
            )
            guest_cp = ControlPoint(guest_control, guest_indications)
            response = await guest_cp.command(bytes([LIST_BONDS]))
            assert response == bond_list(PHONE_BOND, GUEST_BOND), response.hex()

            # BLE-2: ChangePasskey removes every bond but the asking device's.
            response = await guest_cp.command(bytes([CHANGE_PASSKEY]) + varint(PASSKEY))
            assert response == bytes([PROTOCOL_VERSION, STATUS_OK]), response.hex()
            for _ in range(20):
                response = await guest_cp.command(bytes([LIST_BONDS]))
                if response == bond_list(GUEST_BOND):
                    break
                await asyncio.sleep(0.1)
            assert response == bond_list(GUEST_BOND), response.hex()

            # BLE-2: RemoveBond of a bond the unit does not have is refused; of the asking
            # device's own bond it is answered (the bond goes when the link drops).
            await guest_cp.refused(bytes([REMOVE_BOND]) + PHONE_BOND, STATUS_NOT_AVAILABLE)
            response = await guest_cp.command(bytes([REMOVE_BOND]) + GUEST_BOND)
            assert response == bytes([PROTOCOL_VERSION, STATUS_OK]), response.hex()
            await guest_connection.disconnect()
            await asyncio.sleep(0.5)
        finally:
            firmware.terminate()
            output, _ = firmware.communicate(timeout=10)
            log = output.decode(errors="replace")
            print(log)
        # app/src/ble.c logs each removal: the phone's at ChangePasskey, the guest's own once
        # its link dropped.
        assert f"Bond {PHONE_ADDRESS} (random) removed" in log, "the phone's bond stayed"
        assert f"Bond {GUEST_ADDRESS} (random) removed" in log, "the guest's bond stayed"
        # The two refusals above were the firmware's pairing-accept callback (back-off, window
        # closed), not a pairing that failed for another reason. Each log line may come twice
        # (the log backend and the console UART both print to standard output): count them by
        # their time stamps.
        refusals = {line.strip() for line in log.splitlines() if "Pairing refused" in line}
        assert len(refusals) == 2, refusals
        # The host took "Boat 2" at once and of the 20 renames after it only the last.
        to_host = {line.strip() for line in log.splitlines() if "Device name to the host" in line}
        assert len(to_host) == 2, to_host
        assert any(f"to the host: {burst_name}" in line for line in to_host), to_host


def test_ble_1_2_3_4_readout_pairing_window_back_off_and_bonds(request):
    asyncio.run(run(zephyr_exe(request)))


# HCI disconnection reasons (Core Vol 1 Part F): the firmware frees a connection with "low
# resources" and ends a link that never authenticated with "authentication failure".
REASON_LOW_RESOURCES = 0x14
REASON_AUTHENTICATION_FAILURE = 0x05
SET_READ_PROTECTION = 10
# testcase.yaml: CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S in the test build (30 s by default).
UNAUTHENTICATED_LINK_S = 3
GUEST_2_ADDRESS = "D0:D1:D2:D3:D4:D5"


def central(name: str, address: str, link) -> Device:
    """A Bumble central on the shared in-process link, pairing with the right passkey."""
    controller = Controller(name, link=link)
    device = Device.with_hci(name, Address(address), controller, controller)
    device.pairing_config_factory = lambda connection: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=KeyboardDelegate()
    )
    return device


def watch(connection) -> asyncio.Future:
    """A future that gets the reason of the connection's disconnection."""
    dropped = asyncio.get_running_loop().create_future()

    def on_disconnection(reason):
        if not dropped.done():
            dropped.set_result(reason)

    connection.on("disconnection", on_disconnection)
    return dropped


async def dropped_with(dropped: asyncio.Future, reason: int, within_s: float, what: str) -> None:
    try:
        got = await asyncio.wait_for(asyncio.shield(dropped), within_s)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: still connected after {within_s} s") from None
    assert got == reason, f"{what}: disconnected with reason 0x{got:02x}, not 0x{reason:02x}"


async def cut_at_time_limit(dropped: asyncio.Future, what: str) -> None:
    """The link goes for not authenticating, at the time limit and not before."""
    since = asyncio.get_running_loop().time()
    await dropped_with(dropped, REASON_AUTHENTICATION_FAILURE, UNAUTHENTICATED_LINK_S + 3, what)
    waited = asyncio.get_running_loop().time() - since
    assert waited >= UNAUTHENTICATED_LINK_S - 0.5, f"{what}: cut after {waited:.1f} s"


async def run_connections(exe: Path) -> None:
    port = free_port()
    link = AdvertisingSetLink()
    async with await open_transport(f"tcp-server:127.0.0.1:{port}") as hci:
        bms_controller = bms_side(hci, link)
        owner = central("owner", PHONE_ADDRESS, link)
        guest = central("guest", GUEST_ADDRESS, link)
        guest_2 = central("guest 2", GUEST_2_ADDRESS, link)
        # What phones do with a bonded peripheral's Security Request: encrypt with the bond.
        security_requests = []

        def on_owner_connection(connection):
            def on_security_request(auth_req):
                security_requests.append(auth_req)
                asyncio.ensure_future(connection.encrypt())

            connection.on("security_request", on_security_request)

        owner.on("connection", on_owner_connection)

        firmware = start_firmware(exe, port)
        try:
            for device in (owner, guest, guest_2):
                await device.power_on()
            _, _, address = await scan_bms(owner)

            # Two centrals that never authenticate: the second takes the last connection,
            # so the first (the oldest unauthenticated link) is disconnected.
            first = await connect(guest, address)
            first_dropped = watch(first)
            second = await connect(guest_2, address)
            second_dropped = watch(second)
            await dropped_with(first_dropped, REASON_LOW_RESOURCES, 5, "the first guest")
            assert not second_dropped.done(), "the newest link was cut"

            # A connection is free: the owner connects, and the second guest, now the
            # oldest unauthenticated link, goes. The owner pairs (no bond yet: pairing is
            # open after power-up).
            owner_link = await connect(owner, address)
            owner_dropped = watch(owner_link)
            await dropped_with(second_dropped, REASON_LOW_RESOURCES, 5, "the second guest")

            # The owner types the passkey slowly; meanwhile a guest takes the last connection.
            # The owner's link runs a pairing the BMS accepted: it is not cut (that would also
            # count as a failed attempt), and the guest, the newest, stays too.
            asked, typed = asyncio.Event(), asyncio.Event()
            owner.pairing_config_factory = lambda connection: PairingConfig(
                sc=True, mitm=True, bonding=True, delegate=SlowKeyboard(asked, typed)
            )
            pairing = asyncio.ensure_future(owner_link.pair())
            await asyncio.wait_for(asked.wait(), 10)
            during = await connect(guest, address)
            during_dropped = watch(during)
            await asyncio.sleep(2)
            assert not owner_dropped.done(), "the owner was cut while pairing"
            assert not during_dropped.done(), "the newest link was cut"
            typed.set()
            await asyncio.wait_for(pairing, 30)
            await during.disconnect()

            # The owner's link is authenticated: a guest taking the last connection cuts it
            # not, and stays itself (read protection is off).
            third = await connect(guest, address)
            third_dropped = watch(third)
            await asyncio.sleep(2)
            assert not owner_dropped.done(), "the authenticated owner was disconnected"
            assert not third_dropped.done(), "a guest was cut with read protection off"

            # The owner comes back while the guest holds a connection: the guest goes, and
            # the firmware asks the bonded owner to encrypt at once, so its link is
            # authenticated without a new pairing.
            await owner_link.disconnect()
            await asyncio.sleep(0.5)
            assert not third_dropped.done(), "the guest was cut while a connection was free"
            owner_link = await connect(owner, address)
            owner_dropped = watch(owner_link)
            await dropped_with(third_dropped, REASON_LOW_RESOURCES, 5, "the guest at the owner's return")
            for _ in range(50):
                if owner_link.is_encrypted:
                    break
                await asyncio.sleep(0.1)
            assert security_requests, "the bonded owner was not asked to encrypt"
            assert owner_link.is_encrypted, "the bonded owner's link is not encrypted"

            # Read protection on: a guest connected before can read nothing any more and is
            # disconnected once the time limit has run from then; the bonded owner stays.
            fourth = await connect(guest_2, address)
            fourth_dropped = watch(fourth)
            peer = Peer(owner_link)
            await peer.discover_services()
            await peer.discover_characteristics()
            indications = asyncio.Queue()
            control = peer.get_characteristics_by_uuid(CONTROL_POINT)[0]
            await peer.subscribe(control, indications.put_nowait, prefer_notify=False)
            owner_cp = ControlPoint(control, indications)
            assert not fourth_dropped.done(), "a guest was cut with read protection off"
            response = await owner_cp.command(bytes([SET_READ_PROTECTION, 1]))
            assert response == bytes([PROTOCOL_VERSION, STATUS_OK]), response.hex()
            await cut_at_time_limit(fourth_dropped, "a guest with read protection on")

            # A guest connecting now gets the same time limit from its connection on.
            fifth = await connect(guest, address)
            fifth_dropped = watch(fifth)
            await cut_at_time_limit(fifth_dropped, "a new guest with read protection on")
            await asyncio.sleep(1)
            assert not owner_dropped.done(), "the bonded owner was disconnected"
            await owner_link.disconnect()
        finally:
            firmware.terminate()
            output, _ = firmware.communicate(timeout=10)
            log = output.decode(errors="replace")
            print(log)
        # Each log line may come twice (log backend and console): count by time stamps.
        freed = {line.strip() for line in log.splitlines() if "Every connection taken" in line}
        assert len(freed) == 3, freed
        timed_out = {line.strip() for line in log.splitlines() if "Link not authenticated" in line}
        assert len(timed_out) == 2, timed_out


def test_ble_2_unauthenticated_centrals_never_lock_the_owner_out(request):
    """M6 (docs/security.md): two connections; the oldest unauthenticated link goes when a new
    one takes the last; authenticated links and links running an accepted pairing never; with read protection on, links that never
    authenticate go after the time limit."""
    asyncio.run(run_connections(zephyr_exe(request)))
