# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
"""End-to-end BLE test of the OpenBMS firmware on native_sim against Bumble.

A Bumble virtual controller serves HCI over TCP to zephyr.exe (--bt-dev=127.0.0.1:PORT); a
second Bumble controller on the same in-process link is the phone. The phone scans the
Instant Readout advertisement (26 bytes of manufacturer data), connects and reads the device
name from the GAP service (Bumble's virtual controller reports advertising and scan-response
data in one report, so the scan response is not where the name is checked), reads the status
page (open), is refused a battery selection on the empty bank with ATT error 0x80 +
NoSuchBattery, is refused a settings write before pairing, pairs with the passkey (123456, set
at boot by the test-only src/known_passkey.c; Bumble's SMP takes passkey 0 for "none"), gets
ATT error 0x80 + InvalidValue for an out-of-range setting, writes the settings
back, reads the Instant Readout key through the control point (command 5, response
indicated) and decodes the advertisement with victron-ble. Wire format: docs/protocol.md (requests [version, body],
responses [version, status, body]).
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
from bumble.core import UUID, AdvertisingData  # noqa: E402
from bumble.device import Device, Peer  # noqa: E402
from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC  # noqa: E402
from bumble.hci import Address  # noqa: E402
from bumble.link import LocalLink  # noqa: E402
from bumble.pairing import PairingConfig, PairingDelegate  # noqa: E402
from bumble.transport import open_transport  # noqa: E402

VICTRON_COMPANY_ID = 0x02E1
# src/known_passkey.c sets it at boot (ChangePasskey); not 0, which Bumble takes for "none".
PASSKEY = 123456
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
# HCI LE Set Advertising Parameters: scannable, non-connectable undirected advertising.
ADV_SCAN_IND = 0x02


PROTOCOL_VERSION = 1
STATUS_OK = 0
STATUS_INVALID_VALUE = 7
STATUS_NO_SUCH_BATTERY = 8
READ_ADVERTISEMENT_KEY = 5
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
DEVICE_NAME_CHR, SOC = bms_uuid(7), bms_uuid(8)


class KeyboardDelegate(PairingDelegate):
    """The phone: a keyboard on which the user types the BMS's passkey."""

    def __init__(self):
        super().__init__(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY)

    async def get_number(self):
        return PASSKEY


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


async def run(exe: Path) -> None:
    port = free_port()
    link = LocalLink()
    async with await open_transport(f"tcp-server:127.0.0.1:{port}") as hci:
        bms_controller = Controller(
            "bms", host_source=hci.source, host_sink=hci.sink, link=link
        )
        phone_controller = Controller("phone", link=link)
        phone = Device.with_hci(
            "phone", Address("F0:F1:F2:F3:F4:F5"), phone_controller, phone_controller
        )
        phone.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=KeyboardDelegate()
        )

        firmware = subprocess.Popen(
            [str(exe), f"--bt-dev=127.0.0.1:{port}", "--flash_in_ram"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            await phone.power_on()

            readout = asyncio.get_running_loop().create_future()

            def on_advertisement(advertisement):
                data = advertisement.data.get(
                    AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True
                )
                if data and int.from_bytes(data[:2], "little") == VICTRON_COMPANY_ID:
                    if not readout.done():
                        readout.set_result((advertisement.address, bytes(data)))

            phone.on("advertisement", on_advertisement)
            await phone.start_scanning(active=True)
            address, manufacturer_data = await asyncio.wait_for(readout, 30)
            await phone.stop_scanning()
            assert len(manufacturer_data) == ADVERTISEMENT_LEN, manufacturer_data.hex()
            payload = manufacturer_data[2:]
            assert payload[0] == 0x10, "Instant Readout record must start with 0x10"

            connection = await phone.connect(address)

            # The readout goes on while a central (not even paired) holds the connection:
            # the firmware advertises the same 26 bytes scannable and non-connectable.
            # Bumble's virtual controller transmits only ADV_IND PDUs, so this checks what
            # the firmware asked its controller for (HCI LE Set Advertising Parameters,
            # Data, Enable), not what a second receiver hears.
            advertiser = bms_controller.le_legacy_advertiser
            for _ in range(100):
                if advertiser.enabled and advertiser.advertising_type == ADV_SCAN_IND:
                    break
                await asyncio.sleep(0.1)
            assert advertiser.enabled, "no advertising while a central is connected"
            assert advertiser.advertising_type == ADV_SCAN_IND, advertiser.advertising_type
            while_connected = AdvertisingData.from_bytes(advertiser.advertising_data).get(
                AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True
            )
            assert while_connected and len(while_connected) == ADVERTISEMENT_LEN, (
                advertiser.advertising_data.hex()
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
            scan_response = AdvertisingData.from_bytes(advertiser.scan_response_data)
            assert scan_response.get(AdvertisingData.COMPLETE_LOCAL_NAME) == new_name, (
                advertiser.scan_response_data.hex()
            )

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

            await connection.disconnect()
        finally:
            firmware.terminate()
            output, _ = firmware.communicate(timeout=10)
            print(output.decode(errors="replace"))


# BLE-1, BLE-2, BLE-3, BLE-4: scan, the readout still advertised while a central is connected,
# read open, refused selection as ATT error, refused write before pairing, passkey pairing,
# refused value as ATT error, authenticated write, the device renamed (GAP name and scan
# response), key read, Instant Readout decoded by victron-ble.
def test_ble_1_2_3_4_readout_pairing_and_permissions(request):
    asyncio.run(run(zephyr_exe(request)))
