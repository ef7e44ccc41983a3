/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Test configuration only (twister-tests/ble_e2e): at boot, the owner's ChangePasskey command
 * is given to the core as if over an authenticated link, so that the end-to-end test knows
 * the non-zero passkey it types when pairing (test_ble.py PASSKEY). The firmware itself never
 * has a passkey written into it.
 */

#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "app.h"

/* [version 1, ChangePasskey (4), varint 123456] (docs/protocol.md). */
static const uint8_t change_passkey[] = {0x01, 0x04, 0xC0, 0xC4, 0x07};

static void set_known_passkey(void *p1, void *p2, void *p3)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	size_t len = 0;
	int rc;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	/* Answered once main() has started the control thread. */
	rc = control_gatt(BMS_CHR_CONTROL_POINT, true, true, change_passkey,
			  sizeof(change_passkey), resp, sizeof(resp), &len);
	if (rc != 0 || len <= BMS_RESPONSE_STATUS_OFFSET ||
	    resp[BMS_RESPONSE_STATUS_OFFSET] != BMS_STATUS_OK) {
		printk("e2e: passkey not changed (rc %d)\n", rc);
		return;
	}
	printk("e2e: passkey changed\n");
}

K_THREAD_DEFINE(e2e_passkey, 2048, set_known_passkey, NULL, NULL, NULL, 5, 0, 0);
