/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * A fault of the stored secrets, as the firmware handles it (BLE-2, BLE-3, issue 15): before
 * the core opens, the secrets record is overwritten with bytes that are no record (a flipped
 * bit, a record of a newer version look the same to the core). The control thread must then
 * hand the BLE side no passkey, no readout packet (not the last one, not one under a
 * placeholder key) and no pairing, whatever the bonds, until the owner holds the button for
 * 10 s: then a new passkey, every bond removed, pairing open and the readout back.
 */

#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include <bms_port.h>

#include "app.h"
#include "support.h"

/* No record of any version: a corrupt secrets record (docs/persistence.md). */
static const uint8_t not_a_record[] = {0xA5, 0x5A, 0xA5, 0x5A, 0x01, 0x02, 0x03, 0x04,
				       0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C};

static void *secrets_setup(void)
{
	support_terminal_mv(ADC_BATTERY, 4 * 3300);
	support_terminal_mv(ADC_REMOTE_H, 0);
	support_terminal_mv(ADC_REMOTE_L, 0);

	/* The bad record goes in before the control loop opens the core and reads it. */
	zassert_ok(storage_init());
	zassert_ok(bms_port_storage_write("bms/secrets", not_a_record, sizeof(not_a_record)));
	support_start_firmware(false);
	return NULL;
}

/* BLE-2, BLE-3: a secrets fault locks pairing and withdraws the readout until the button
 * reset; the reset brings a new passkey, removes every bond, opens pairing and the readout.
 */
ZTEST(secrets, test_ble_2_ble_3_secrets_fault_locks_pairing_and_readout_until_the_button)
{
	struct support_ble seen;
	uint32_t actions;

	zassert_ok(control_post_bonds(NULL, 0));
	k_sleep(K_SECONDS(2));
	seen = support_ble();
	zassert_true(seen.passkey_updates >= 1, "no passkey word given to the BLE side");
	zassert_equal(seen.passkey, BLE_NO_PASSKEY, "a passkey (%u) despite the fault",
		      seen.passkey);
	zassert_true(seen.adv_posts >= 1, "the readout must be withdrawn, not left unset");
	zassert_equal(seen.adv_len, 0, "a readout packet (%zu bytes) without usable secrets",
		      seen.adv_len);
	zassert_false(seen.pairing_allowed, "pairing open (power-up window) despite the fault");

	/* A short press does not unlock it. */
	zassert_ok(support_button(true));
	k_sleep(K_MSEC(300));
	zassert_ok(support_button(false));
	k_sleep(K_SECONDS(1));
	zassert_false(support_ble().pairing_allowed, "a short press unlocked pairing");
	zassert_equal(support_ble().passkey, BLE_NO_PASSKEY);

	actions = support_ble().bond_actions;
	zassert_ok(support_button(true));
	k_sleep(K_MSEC(10500));
	zassert_ok(support_button(false));
	k_sleep(K_SECONDS(2));

	seen = support_ble();
	zassert_true(seen.bond_actions > actions, "the reset removed no bond");
	zassert_equal(seen.bond_action.kind, BMS_BOND_ACTION_KIND_REMOVE_ALL);
	zassert_true(seen.passkey >= 1 && seen.passkey <= BMS_PASSKEY_MAX, "passkey %u after reset",
		     seen.passkey);
	zassert_true(seen.pairing_allowed, "pairing closed after the reset");
	zassert_equal(seen.adv_len, BMS_ADVERTISEMENT_LEN, "no readout after the reset");
}

ZTEST_SUITE(secrets, NULL, secrets_setup, NULL, NULL, NULL);
